"""One CowClip step of DeepFM on a tiny batch, printed line by line against Algorithm 1.

    python -m validate.audit.explain

Symbols: B batch rows, F sparse fields, K embedding dim, V table rows. For each row k of the shared
embedding table (an id of one field), Algorithm 1 of arXiv 2204.06240 does, after the backward pass:

    cnt_k       = occurrences of id k in the batch                               (count)
    g_k         = its mean-over-batch gradient row (the backward pass sums the occurrences)
    threshold_k = cnt_k * max(ratio * ||w_k||, floor)                            (clip value)
    g_k        <- g_k * min(1, threshold_k / ||g_k||)                            (clip; a zero row stays zero)
    w_k        <- Adam(w_k, g_k)                                                 (update)

with (ratio, floor) = (r, zeta) in the paper's form and (r, r * r * sqrt(K) * bound) in the reference
code's. The L2 term 2 * lambda * w_k enters the clipped gradient in the reference form (the Keras
regulariser's gradient is part of what train.py clips) and is added after the clip in the paper's.
Rows absent from the batch get only the L2 term, and Adam (the reference's dense Adam); in the
reference form they are clipped as rows seen once.

The batch repeats ids, has one zero row (id 1 of field C3: its weights are set to zero and its
gradient row is zeroed before the step, so the clip must leave it alone), one row that is clipped and
one that is not. Both forms run from the same start through the real engine (`engine_step`). Every
number is printed with 9 significant digits; tests/test_explain.py parses the output and recomputes
each one from the formulas above in float64.
"""
import copy
import dataclasses

import click
import numpy as np

from engine.backend import get_backend
from engine.optim import AdamState, bias_corrected_lr
from engine.step import StepConfig
from models import EMBED_TABLE, ModelConfig, Schema, build_model

SCHEMA = Schema(vocab_sizes=(3, 3, 2), num_dense=2)          # V = 8 rows: C1 0-2, C2 3-5, C3 6-7
SPARSE = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1]])   # (B, F) = (6, 3)
LABEL = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 1.0], dtype=np.float32)                  # (B,)
ZERO_ROW = 7                  # field C3, id 1: weights and gradient set to zero
LARGE_ROW = 6                 # field C3, id 0: weights scaled up, so its threshold is high (not clipped)
HYPER = dict(lr=1e-3, lr_embed=1e-2, l2=0.05, clip=1.0, bound=1e-3, embed_optim="dense")


def tiny_setup():
    """-> (model, params, batch): DeepFM with K = 4, one hidden layer of 8, float32 as in training."""
    from dataio.schema import Batch

    model = build_model("deepfm", SCHEMA, ModelConfig(embed_dim=4, dnn_hidden=(8,), init_stddev=0.05))
    params = model.init_params(seed=7)
    params[EMBED_TABLE][LARGE_ROW] *= 40.0
    params[EMBED_TABLE][ZERO_ROW] = 0.0
    dense = np.random.default_rng(7).random((len(LABEL), SCHEMA.num_dense)).astype(np.float32)
    return model, params, Batch(SPARSE.astype(np.int32), dense, LABEL)


def engine_step(model, params: dict, grads: dict, config: StepConfig, kernels) -> dict:
    """The one place that calls the engine: engine.step.apply_gradients (Algorithm 1, with the rule
    of engine/cowclip.py), the backend's cowclip_rows wrapped to record what the clip sees.
    -> {"ratio", "floor", "clip_in" (U, K), "scales" (U,), "state"}; params updated in place."""
    from engine.step import apply_gradients

    seen = {}

    def recording_cowclip_rows(row_grads, table, ids, counts, ratio, floor):
        seen["ratio"], seen["floor"], seen["clip_in"] = ratio, floor, np.array(row_grads, dtype=np.float64)
        seen["scales"] = np.asarray(kernels.cowclip_rows(row_grads, table, ids, counts, ratio, floor))
        return seen["scales"]

    recording = dataclasses.replace(kernels, cowclip_rows=recording_cowclip_rows)
    state = AdamState.zeros_like(params, np)
    apply_gradients(model, params, grads, state, config, recording)
    return {**seen, "state": state}


def fmt(x) -> str:
    if np.ndim(x):
        return "[" + ", ".join(f"{float(v):.9g}" for v in x) + "]"
    return f"{float(x):.9g}"


def explain_form(form: str, model, params0: dict, batch, kernels) -> list[str]:
    """The lines of one step in CowClip form `form` ('reference' or 'paper')."""
    params = copy.deepcopy(params0)
    _, grads = model.loss(params, batch, kernels)
    row_grad = grads[EMBED_TABLE]
    row_grad.rows[np.asarray(row_grad.ids) == ZERO_ROW] = 0.0
    data_grad = {int(i): np.array(r, dtype=np.float64) for i, r in zip(row_grad.ids, row_grad.rows)}
    counts = {int(i): int(c) for i, c in zip(row_grad.ids, row_grad.counts)}
    config = StepConfig(clip_form=form, **HYPER)
    w0 = np.array(params[EMBED_TABLE], dtype=np.float64)
    seen = engine_step(model, params, grads, config, kernels)
    w1 = np.array(params[EMBED_TABLE], dtype=np.float64)
    m1, v1 = seen["state"].m[EMBED_TABLE], seen["state"].v[EMBED_TABLE]
    position = {int(i): u for u, i in enumerate(row_grad.ids)}
    a = config.adam
    lam = HYPER["l2"]
    lines = [f"== form {form} ==",
             f"ratio = {fmt(seen['ratio'])}  # r",
             f"floor = {fmt(seen['floor'])}  # " + ("zeta = --bound" if form == "paper" else
                                                   "r * r * sqrt(K) * bound (clip.py's min_w times r)"),
             f"lr_t = {fmt(bias_corrected_lr(config.lr_embed, 1, a))}  # lr_embed * sqrt(1 - beta2) / (1 - beta1), t = 1",
             "where L2 enters: " + ("before the clip (g_in = g + l2)" if form == "reference" else
                                    "after the clip (g_in = g; the step adds l2 to the clipped row)")]
    names = model.schema.sparse_names
    for row in range(w0.shape[0]):
        field = int(np.searchsorted(model.offsets, row, side="right") - 1)
        label = f"row {row} (field {names[field]}, id {row - model.offsets[field]})"
        l2_term = 2.0 * lam * w0[row]
        if row in position:
            u = position[row]
            g = data_grad[row]
            g_in, scale = seen["clip_in"][u], float(seen["scales"][u])
            kind = "zero row" if not g_in.any() else ("clipped" if scale < 1.0 else "not clipped")
            lines.append(f"-- {label}: {kind}")
            lines += [f"cnt = {counts[row]}", f"w = {fmt(w0[row])}", f"||w|| = {fmt(np.linalg.norm(w0[row]))}",
                      f"g = {fmt(g)}  # mean-over-batch gradient from the backward pass",
                      f"||g|| = {fmt(np.linalg.norm(g))}", f"l2 = {fmt(l2_term)}  # 2 * lambda * w",
                      f"g_in = {fmt(g_in)}  # what the clip sees", f"||g_in|| = {fmt(np.linalg.norm(g_in))}"]
            threshold = counts[row] * max(seen["ratio"] * np.linalg.norm(w0[row]), seen["floor"])
        else:
            lines.append(f"-- {label}: absent from the batch")
            g_in = l2_term
            clip_absent = form == "reference"
            threshold = max(seen["ratio"] * np.linalg.norm(w0[row]), seen["floor"])
            norm = np.linalg.norm(g_in)
            scale = min(1.0, threshold / norm) if clip_absent and norm > threshold else 1.0
            lines += ["cnt = 0", f"w = {fmt(w0[row])}", f"||w|| = {fmt(np.linalg.norm(w0[row]))}",
                      f"g_in = {fmt(g_in)}  # only the L2 term", f"||g_in|| = {fmt(norm)}"]
            if not clip_absent:
                lines.append("# paper form: rows absent from the batch are not clipped")
        if row in position or form == "reference":
            lines += [f"threshold = {fmt(threshold)}  # max(cnt, 1) * max(ratio * ||w||, floor)",
                      f"scale = {fmt(scale)}  # min(1, threshold / ||g_in||)"]
        g_out = m1[row] / (1.0 - a.beta1)   # the gradient Adam received: m = (1 - beta1) g at t = 1
        lines += [f"g_adam = {fmt(g_out)}  # the gradient Adam uses: scale * g_in" + (" + l2" if form == "paper" else ""),
                  f"m = {fmt(m1[row])}  # (1 - beta1) * g_adam", f"v = {fmt(v1[row])}  # (1 - beta2) * g_adam^2",
                  f"w_new = {fmt(w1[row])}  # w - lr_t * m / (sqrt(v) + epsilon)"]
    return lines


def explain_lines() -> list[str]:
    kernels = get_backend("cpu")
    model, params, batch = tiny_setup()
    a = StepConfig().adam
    lines = ["One CowClip step of DeepFM, against Algorithm 1 (arXiv 2204.06240)",
             f"batch: B = {len(LABEL)}, F = {SCHEMA.num_fields}, K = {model.config.embed_dim}, V = {SCHEMA.total_rows}"
             " (row = offset of the field + id)"]
    lines += [f"ids {b} = {list(map(int, model.global_ids(batch.sparse)[b]))}  label {int(batch.label[b])}"
              for b in range(len(LABEL))]
    lines += [f"lambda = {fmt(HYPER['l2'])}", f"r = {fmt(HYPER['clip'])}", f"bound = {fmt(HYPER['bound'])}",
              f"K = {model.config.embed_dim}", f"lr_embed = {fmt(HYPER['lr_embed'])}",
              f"beta1 = {fmt(a.beta1)}", f"beta2 = {fmt(a.beta2)}", f"epsilon = {fmt(a.epsilon)}",
              "# dense weights (DNN, linear.dense_w, bias) get their L2 term and Adam, never a clip;",
              "# the 1-dimensional linear table is not clipped (as the reference)."]
    for form in ("reference", "paper"):
        lines += explain_form(form, model, params, batch, kernels)
    return lines


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Print one CowClip step of DeepFM on a tiny batch, line by line against Algorithm 1."""
    from engine.run.runtime import configure_process

    configure_process()
    print("\n".join(explain_lines()))


if __name__ == "__main__":
    main()
