"""Adam with the reference's semantics (Keras Adam: beta1 0.9, beta2 0.999, epsilon 1e-7):

    t      = number of updates so far + 1
    lr_t   = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    m     <- beta1 * m + (1 - beta1) * g
    v     <- beta2 * v + (1 - beta2) * g^2
    w     <- w - lr_t * m / (sqrt(v) + epsilon)          (epsilon outside the bias correction)

The weights (every parameter but the embedding tables) are updated here with array arithmetic;
the tables with the sparse kernels (engine/kernels/adam.py), in one of two `embed_optim` modes:
    dense  every row's moments decay and every row moves each step (the reference: its L2
           penalty makes the table's gradient dense);
    lazy   only the rows in the batch are regularised and updated (TF LazyAdam, torch
           SparseAdam); bias correction still uses the global t.
"""
from dataclasses import dataclass, field

EMBED_MODES = ("dense", "lazy")


@dataclass
class AdamState:
    """Moments of every parameter (same keys as params) and the number of updates made."""

    m: dict = field(default_factory=dict)
    v: dict = field(default_factory=dict)
    updates: int = 0

    @classmethod
    def zeros_like(cls, params: dict, xp) -> "AdamState":
        return cls({k: xp.zeros_like(p) for k, p in params.items()},
                   {k: xp.zeros_like(p) for k, p in params.items()}, 0)


@dataclass(frozen=True)
class AdamConfig:
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-7


def bias_corrected_lr(lr: float, t: int, config: AdamConfig) -> float:
    """lr_t of update number t (1-based)."""
    return lr * (1.0 - config.beta2 ** t) ** 0.5 / (1.0 - config.beta1 ** t)


def adam_weight_update(w, g, m, v, lr_t: float, config: AdamConfig) -> None:
    """In place on w, m, v (arrays of any shape)."""
    m *= config.beta1
    m += (1.0 - config.beta1) * g
    v *= config.beta2
    v += (1.0 - config.beta2) * (g * g)
    w -= lr_t * m / (v ** 0.5 + config.epsilon)


def warmup_lr(lr: float, update: int, warmup_updates: int) -> float:
    """The reference's Keras PolynomialDecay(1e-8, warmup_updates, lr, power=1): a straight line
    from 1e-8 at update 0 to lr at update warmup_updates, then lr. `update` counts from 0."""
    if warmup_updates <= 0 or update >= warmup_updates:
        return lr
    return 1e-8 + (lr - 1e-8) * update / warmup_updates
