"""Finite-difference checks of every hand-written backward pass, in float64.

    python -m validate.audit.gradcheck            # prints (what, parameter, max rel error) and exits 1 on failure

Each check contracts the output with a fixed random upstream gradient G, so the scalar
f(x) = sum(out(x) * G) has gradient exactly what the backward returns for dout = G, and compares
it with fourth-order centred differences
    (-f(x + 2h e_i) + 8 f(x + h e_i) - 8 f(x - h e_i) + f(x - 2h e_i)) / 12h
(truncation error O(h^4), so h can be large enough that rounding stays near 1e-12), element by
element:

    elementwise_rel_error = max_i |a_i - n_i| / max(FLOOR, |a_i| + |n_i|)      (validate/errors.py)

FLOOR is 1e-6, not CS231n's 1e-8: the differences carry rounding noise of about 1e-13 (eps |f| / h),
so an entry that is exactly zero (a dead ReLU unit, say) would read as an error of 1e-5 against a
1e-8 floor. With FLOOR = 1e-6 and the 1e-6 tolerance, entries smaller than 1e-6 are held to an
absolute error of 1e-12 and all others to a relative error of 1e-6.

Embedding tables are checked on every row the batch touches, and on untouched rows (whose
numerical gradient must be zero). Batches include ids repeated within a field and across the
batch, ids that occur once, and a field with a single id. Inputs are drawn so that ReLU
pre-activations stay away from zero, where the function has a kink.
"""
import sys

import click
import numpy as np

from dataio.schema import Batch
from engine.backend import get_backend
from engine.layers import cross, embedding, fm, linear, loss, mlp
from models import MODELS, ModelConfig, Schema, build_model
from validate.errors import elementwise_rel_error

TOLERANCE = 1e-6
STEP = 1e-4


def numerical_grad(f, x: np.ndarray, indices=None, h: float = STEP) -> np.ndarray:
    """Fourth-order centred differences of scalar f() with respect to x (changed in place, then
    restored). indices: flat positions to probe (all when None); returns an array shaped like x."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)

    def f_at(i, value):
        flat[i] = value
        return f()

    for i in range(flat.size) if indices is None else indices:
        old = flat[i]
        gflat[i] = (-f_at(i, old + 2 * h) + 8 * f_at(i, old + h) - 8 * f_at(i, old - h)
                    + f_at(i, old - 2 * h)) / (12 * h)
        flat[i] = old
    return grad


def _contract(forward, upstream):
    return lambda: float(np.sum(forward() * upstream))


# --------------------------------------------------------------------------------------------
# layers


def check_layers(seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    kernels = get_backend("cpu")
    rows = []

    # embedding: repeated ids within a field and across the batch, ids seen once
    table = rng.normal(size=(9, 4))
    ids = np.array([[0, 5], [0, 6], [3, 5], [0, 8]])
    G = rng.normal(size=(4, 2, 4))
    index = embedding.index_batch_ids(ids, 9, kernels)
    grad = embedding.embedding_backward(G, index, kernels)
    num = numerical_grad(_contract(lambda: embedding.embedding_forward(table, ids)[0], G), table)
    dense_grad = np.zeros_like(table)
    dense_grad[grad.ids] = grad.rows
    rows.append(("embedding", "table (touched and untouched rows)", elementwise_rel_error(dense_grad, num)))

    # linear part
    wide, dense, w = rng.normal(size=(5, 3, 1)), rng.normal(size=(5, 4)), rng.normal(size=4)
    g = rng.normal(size=5)
    dwide, ddense, dw = linear.linear_backward(g, linear.linear_forward(wide, dense, w)[1])
    f = _contract(lambda: linear.linear_forward(wide, dense, w)[0], g)
    rows += [("linear", "wide", elementwise_rel_error(dwide, numerical_grad(f, wide))),
             ("linear", "dense", elementwise_rel_error(ddense, numerical_grad(f, dense))),
             ("linear", "w", elementwise_rel_error(dw, numerical_grad(f, w)))]

    # FM
    emb = rng.normal(size=(5, 4, 3))
    demb = fm.fm_backward(g, fm.fm_forward(emb)[1])
    numeric = numerical_grad(_contract(lambda: fm.fm_forward(emb)[0], g), emb)
    rows.append(("fm", "emb", elementwise_rel_error(demb, numeric)))

    # MLP: two Dense+ReLU layers, pre-activations kept away from 0
    x = rng.normal(size=(6, 5))
    Ws = [rng.normal(size=(5, 4)), rng.normal(size=(4, 3))]
    bs = [rng.normal(size=4), rng.normal(size=3)]
    _push_away_from_kinks(x, Ws, bs)
    Gh = rng.normal(size=(6, 3))
    dx, dWs, dbs = mlp.mlp_backward(Gh, mlp.mlp_forward(x, Ws, bs)[1])
    f = _contract(lambda: mlp.mlp_forward(x, Ws, bs)[0], Gh)
    rows.append(("mlp", "x", elementwise_rel_error(dx, numerical_grad(f, x))))
    for i in range(2):
        rows.append(("mlp", f"W{i}", elementwise_rel_error(dWs[i], numerical_grad(f, Ws[i]))))
        rows.append(("mlp", f"b{i}", elementwise_rel_error(dbs[i], numerical_grad(f, bs[i]))))

    # cross networks
    x0 = rng.normal(size=(5, 6))
    Gx = rng.normal(size=(5, 6))
    ws, cbs = [rng.normal(size=6) * 0.5 for _ in range(2)], [rng.normal(size=6) for _ in range(2)]
    dx0, dws, dcbs = cross.cross_v1_backward(Gx, cross.cross_v1_forward(x0, ws, cbs)[1])
    f = _contract(lambda: cross.cross_v1_forward(x0, ws, cbs)[0], Gx)
    rows.append(("cross_v1", "x0", elementwise_rel_error(dx0, numerical_grad(f, x0))))
    rows += [("cross_v1", f"w{l}", elementwise_rel_error(dws[l], numerical_grad(f, ws[l]))) for l in range(2)]
    rows += [("cross_v1", f"b{l}", elementwise_rel_error(dcbs[l], numerical_grad(f, cbs[l]))) for l in range(2)]

    Wm = [rng.normal(size=(6, 6)) * 0.4 for _ in range(2)]
    dx0, dWm, dcbs = cross.cross_v2_backward(Gx, cross.cross_v2_forward(x0, Wm, cbs)[1])
    f = _contract(lambda: cross.cross_v2_forward(x0, Wm, cbs)[0], Gx)
    rows.append(("cross_v2", "x0", elementwise_rel_error(dx0, numerical_grad(f, x0))))
    rows += [("cross_v2", f"W{l}", elementwise_rel_error(dWm[l], numerical_grad(f, Wm[l]))) for l in range(2)]
    rows += [("cross_v2", f"b{l}", elementwise_rel_error(dcbs[l], numerical_grad(f, cbs[l]))) for l in range(2)]

    E, r = 3, 2
    Us = [rng.normal(size=(E, 6, r)) * 0.5 for _ in range(2)]
    Vs = [rng.normal(size=(E, 6, r)) * 0.5 for _ in range(2)]
    Cs = [rng.normal(size=(E, r, r)) for _ in range(2)]
    gate = rng.normal(size=(6, E))
    grads = cross.cross_mix_backward(Gx, cross.cross_mix_forward(x0, Us, Vs, Cs, cbs, gate)[1])
    f = _contract(lambda: cross.cross_mix_forward(x0, Us, Vs, Cs, cbs, gate)[0], Gx)
    rows.append(("cross_mix", "x0", elementwise_rel_error(grads[0], numerical_grad(f, x0))))
    for name, arrays, dgrads in (("U", Us, grads[1]), ("V", Vs, grads[2]), ("C", Cs, grads[3]), ("b", cbs, grads[4])):
        rows += [("cross_mix", f"{name}{l}", elementwise_rel_error(dgrads[l], numerical_grad(f, arrays[l])))
                 for l in range(2)]
    rows.append(("cross_mix", "gate", elementwise_rel_error(grads[5], numerical_grad(f, gate))))

    # loss, including logits far from 0 where the naive form would overflow
    logits = np.concatenate([rng.normal(size=6) * 3, [40.0, -40.0]])
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 0], dtype=np.float64)
    dlogits = loss.bce_with_logits_backward(loss.bce_with_logits_forward(logits, labels)[1])
    num = numerical_grad(lambda: loss.bce_with_logits_forward(logits, labels)[0], logits)
    rows.append(("bce_with_logits", "logits", elementwise_rel_error(dlogits, num)))
    return rows


def _push_away_from_kinks(x, Ws, bs, margin: float = 0.05):
    """Shift biases so that no ReLU pre-activation lies within `margin` of zero."""
    h = x
    for W, b in zip(Ws, bs):
        z = h @ W + b
        near = np.abs(z) < margin
        while near.any():
            b += margin * 2.1 * near.any(axis=0)
            z = h @ W + b
            near = np.abs(z) < margin
        h = np.maximum(z, 0)


# --------------------------------------------------------------------------------------------
# models


CHECK_CONFIG = ModelConfig(embed_dim=3, dnn_hidden=(7, 5), cross_layers=2, num_experts=2, low_rank=2,
                           init_stddev=0.5, dtype="float64")
# field 0 repeats ids, field 2 has a vocabulary of one id, field 1 has ids seen once
CHECK_SCHEMA = Schema((4, 12, 1, 6), 3)


def check_batch(seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    B = 10
    sparse = np.stack([rng.integers(0, 2, B),          # two ids, each many times
                       rng.permutation(12)[:B],        # each id at most once
                       np.zeros(B, dtype=np.int64),    # a single id
                       rng.integers(0, 6, B)], axis=1).astype(np.int32)
    dense = rng.random((B, 3))
    label = rng.integers(0, 2, B).astype(np.float64)
    label[:2] = [0.0, 1.0]
    return Batch(sparse, dense, label)


def _model_relu_margin(model, params, batch) -> float:
    """Smallest |pre-activation| of the DNN on the batch (inf without a DNN)."""
    if "dnn.0.W" not in params:
        return np.inf
    emb = params["embed.table"][model.global_ids(batch.sparse)]
    h = model.deep_input(emb, batch.dense)
    smallest = np.inf
    for i in range(len(model.config.dnn_hidden)):
        z = h @ params[f"dnn.{i}.W"] + params[f"dnn.{i}.b"]
        smallest = min(smallest, float(np.abs(z).min()))
        h = np.maximum(z, 0)
    return smallest


def check_model(name: str, seed: int = 0) -> list:
    model = build_model(name, CHECK_SCHEMA, CHECK_CONFIG)
    batch = check_batch(seed)
    kernels = get_backend("cpu")
    params = None
    for attempt in range(20):  # redraw until no ReLU pre-activation is within 1e-2 of its kink
        params = model.init_params(seed + attempt)
        for name_ in params:
            if name_.endswith("table") or name_ == "bias":  # give the zero-initialised parts a value
                params[name_] += np.random.default_rng(attempt).normal(0, 0.3, params[name_].shape)
        if _model_relu_margin(model, params, batch) > 1e-2:
            break
    _, grads = model.loss(params, batch, kernels)
    f = lambda: model.loss(params, batch, kernels)[0]  # noqa: E731 (a closure over params)
    rows = []
    for pname, value in params.items():
        grad = grads[pname]
        if hasattr(grad, "rows"):  # a RowGrad: compare on touched rows plus a few untouched ones
            dense_grad = np.zeros_like(value)
            dense_grad[grad.ids] = grad.rows
            touched = np.asarray(sorted(set(grad.ids.tolist())))
            untouched = np.setdiff1d(np.arange(value.shape[0]), touched)[:5]
            probe_rows = np.concatenate([touched, untouched])
            cols = value.shape[1]
            indices = (probe_rows[:, None] * cols + np.arange(cols)[None, :]).ravel()
            num = numerical_grad(f, value, indices)
            counts_ok = _counts_match(grad, model.global_ids(batch.sparse))
            rows.append((name, f"{pname} ({len(touched)} touched rows)",
                         elementwise_rel_error(dense_grad.reshape(-1)[indices], num.reshape(-1)[indices])
                         if counts_ok else np.inf))
        else:
            rows.append((name, pname, elementwise_rel_error(grad, numerical_grad(f, value))))
    return rows


def _counts_match(grad, ids) -> bool:
    unique, counts = np.unique(ids, return_counts=True)
    order = np.argsort(grad.ids)
    return bool(np.array_equal(grad.ids[order], unique) and np.array_equal(grad.counts[order], counts))


def run_all() -> list:
    rows = check_layers()
    for name in MODELS:
        rows += check_model(name)
    return rows


def main() -> int:
    rows = run_all()
    width = max(len(f"{a}  {b}") for a, b, _ in rows)
    print(f"{'layer/model  parameter':<{width}}  max rel error")
    for what, param, err in rows:
        flag = "" if err <= TOLERANCE else "   FAIL"
        print(f"{what + '  ' + param:<{width}}  {err:.2e}{flag}")
    worst = max(err for _, _, err in rows)
    print(f"{len(rows)} checks, worst {worst:.2e}, tolerance {TOLERANCE:.0e}")
    return 0 if worst <= TOLERANCE else 1


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Check every layer's and model's backward pass against float64 finite differences; prints a
    table of (layer or model, parameter, max relative error) and exits 1 if any exceeds the tolerance."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
