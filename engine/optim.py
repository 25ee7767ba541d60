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

import numpy as np

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


def warmup_updates(warmup: float, train_rows: int, batch_size: int) -> int:
    """Length of the dense-lr warm-up in updates, as the reference's train.py counts it:
    int(warmup * int(N / bs)), whole batches only, though each epoch also trains the last partial
    batch (Keras fit takes ceil(N / bs) steps an epoch)."""
    return int(warmup * (train_rows // batch_size))


def warmup_lr(lr: float, update: int, warmup_updates: int) -> float:
    """The reference's Keras PolynomialDecay(1e-8, warmup_updates, lr, power=1): a straight line
    from 1e-8 at update 0 to lr at update warmup_updates, then lr. `update` counts from 0 (Keras
    passes the optimizer's iterations before the increment). Keras computes
    (1e-8 - lr) * (1 - min(update, W) / W) + lr, the same line; warmup_lr_float32 does it in float32."""
    if warmup_updates <= 0 or update >= warmup_updates:
        return lr
    return 1e-8 + (lr - 1e-8) * update / warmup_updates


def warmup_lr_float32(lr: float, update: int, warmup_updates: int) -> float:
    """warmup_lr as TF 2.4 evaluates PolynomialDecay: its initial rate 1e-8 becomes a float32 tensor,
    so every operand and operation is float32 (whatever the parameters' dtype):
        (f32(1e-8) - f32(lr)) * (1 - f32(min(update, W)) / f32(W)) + f32(lr)
    W = 0 divides 0 by 0 there (a nan learning rate); here, as warmup_lr, it means no warm-up."""
    if warmup_updates <= 0:
        return float(np.float32(lr))
    f32 = np.float32
    p = f32(min(update, warmup_updates)) / f32(warmup_updates)
    return float((f32(1e-8) - f32(lr)) * (f32(1.0) - p) + f32(lr))


def tf_float32(x: float) -> float:
    """x as TF 2.4's Keras optimizers hold a hyperparameter: a float32 variable (then cast to the
    parameters' dtype, exactly)."""
    return float(np.float32(x))


def keras_adam_config(param_dtype="float32") -> AdamConfig:
    """Keras Adam's constants as TF 2.4 applies them: beta1 and beta2 are float32 variables; epsilon
    is converted to the parameters' dtype at each step (float32 parameters: float32's 1e-7)."""
    return AdamConfig(beta1=tf_float32(0.9), beta2=tf_float32(0.999),
                      epsilon=float(np.dtype(param_dtype).type(1e-7)))
