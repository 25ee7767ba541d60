"""One CowClip step of DeepFM on a tiny batch, printed line by line against Algorithm 1.

    python -m validate.audit.explain

Symbols: B batch rows, F sparse fields, K embedding dim, V table rows. For each row k of the shared
embedding table (an id of one field), Algorithm 1 of arXiv 2204.06240 does, after the backward pass:

    L3   g_k         = its mean-over-batch gradient row (the backward pass sums the occurrences)
    L6   n_g         = ||g_k||
    L7   cnt_k       = occurrences of id k in the batch
    L8   threshold_k = cnt_k * max(ratio * ||w_k||, floor)
    L9   g_k        <- g_k * min(1, threshold_k / n_g)                     (a zero row stays zero)
    L10  w_k        <- Adam(w_k, g_k)

with (ratio, floor) = (r, zeta) in the paper's form and (r, r * r * sqrt(K) * bound) in the reference
code's; Ln is line n of the paper's Algorithm 1, and every printed quantity's comment names its line. The L2 term 2 * lambda * w_k enters the clipped gradient in the reference form (the Keras
regulariser's gradient is part of what train.py clips) and is added after the clip in the paper's.
Rows absent from the batch get only the L2 term, and Adam (the reference's dense Adam); in the
reference form they are clipped as rows seen once.

The batch repeats ids, has one zero row (id 1 of field C3: its weights are set to zero and its
gradient row is zeroed before the step, so the clip must leave it alone), one row that is clipped and
one that is not. Both forms run from the same start through the real engine (`engine_step`). Every
number is printed with 9 significant digits; tests/test_explain.py parses the output and recomputes
each one from the formulas above in float64.

At t = 1 Keras Adam moves every coordinate by about lr_embed * sign(g), so the clip's scale cancels
and clipped rows move as unclipped ones. The last section shows why the clip matters all the same:
update t = 1 and t = LATER_STEP, each made twice from the same state, with CowClip and with the clip
off, side by side.

The section before it is an audit finding about the reference code itself: with --l2 0 (and CowClip
on), no regulariser makes TF's embedding gradient dense, so it stays an IndexedSlices of one slice per
occurrence, and the reference's clip.py takes its branch marked "FIXME: This part is not tested": each
occurrence's gradient is clipped on its own to r * ||w_k||, with no count and no floor, and Adam then
sums a row's slices. The engine keeps Algorithm 1 (the row's summed gradient clipped to
cnt_k * max(r * ||w_k||, floor)); the section prints both for the batch's rows at l2 = 0, and the
run's differences line names the case when a command has --l2 0 with CowClip on.
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
HYPER = dict(lr=1e-3, lr_embed=1e-3, l2=0.05, clip=1.0, bound=1e-3, embed_optim="dense")


def tiny_setup():
    """-> (model, params, batch): DeepFM with K = 4, one hidden layer of 8, float32 as in training."""
    from dataio.schema import Batch

    model = build_model("deepfm", SCHEMA, ModelConfig(embed_dim=4, dnn_hidden=(8,), init_stddev=0.05))
    params = model.init_params(seed=7)
    params[EMBED_TABLE][LARGE_ROW] *= 40.0
    params[EMBED_TABLE][ZERO_ROW] = 0.0
    dense = np.random.default_rng(7).random((len(LABEL), SCHEMA.num_dense)).astype(np.float32)
    return model, params, Batch(SPARSE.astype(np.int32), dense, LABEL)


def engine_step(model, params: dict, grads: dict, config: StepConfig, kernels, state: AdamState | None = None) -> dict:
    """The one place that calls the engine: engine.step.apply_gradients (Algorithm 1, with the rule
    of engine/cowclip.py), the backend's cowclip_rows wrapped to record what the clip sees.
    state: Adam's moments to continue from (default: zeros, update t = 1).
    -> {"ratio", "floor", "clip_in" (U, K), "scales" (U,), "state"}; params (and state) updated in place.
    With the clip off (config.clip = 0) cowclip_rows is never called and only "state" is set."""
    from engine.step import apply_gradients

    seen = {}

    def recording_cowclip_rows(row_grads, table, ids, counts, ratio, floor):
        seen["ratio"], seen["floor"], seen["clip_in"] = ratio, floor, np.array(row_grads, dtype=np.float64)
        seen["scales"] = np.asarray(kernels.cowclip_rows(row_grads, table, ids, counts, ratio, floor))
        return seen["scales"]

    recording = dataclasses.replace(kernels, cowclip_rows=recording_cowclip_rows)
    state = AdamState.zeros_like(params, np) if state is None else state
    apply_gradients(model, params, grads, state, config, recording)
    return {**seen, "state": state}


def fmt(x) -> str:
    if np.ndim(x):
        return "[" + ", ".join(f"{float(v):.9g}" for v in x) + "]"
    return f"{float(x):.9g}"


def row_label(model, row: int) -> str:
    field = int(np.searchsorted(model.offsets, row, side="right") - 1)
    return f"row {row} (field {model.schema.sparse_names[field]}, id {row - model.offsets[field]})"


def batch_grads(model, params: dict, batch, kernels) -> tuple[float, dict]:
    """Line 3 of Algorithm 1: the batch's mean loss and gradients, ZERO_ROW's gradient row set to zero."""
    loss, grads = model.loss(params, batch, kernels)
    row_grad = grads[EMBED_TABLE]
    row_grad.rows[np.asarray(row_grad.ids) == ZERO_ROW] = 0.0
    return loss, grads


def explain_form(form: str, model, params0: dict, batch, kernels) -> list[str]:
    """The lines of one step (t = 1) in CowClip form `form` ('reference' or 'paper'). Each quantity's
    comment names its line of Algorithm 1 (L3 ... L10)."""
    params = copy.deepcopy(params0)
    loss, grads = batch_grads(model, params, batch, kernels)
    row_grad = grads[EMBED_TABLE]
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
             f"loss = {fmt(loss)}  # L3: the batch's mean logloss at w_1 "
             "(the L2 penalty enters as 2 * lambda * w below)",
             "# L4: the weights (DNN, linear.dense_w, bias) take their L2 term and Adam, never a clip",
             f"ratio = {fmt(seen['ratio'])}  # Input: r",
             f"floor = {fmt(seen['floor'])}  # Input: " + ("zeta = --bound" if form == "paper" else
                                                          "zeta = r * r * sqrt(K) * bound (clip.py's min_w times r)"),
             f"lr_t = {fmt(bias_corrected_lr(config.lr_embed, 1, a))}  "
             "# L10's Opt: lr_embed * sqrt(1 - beta2) / (1 - beta1), t = 1",
             "where L2 enters: " + ("before the clip (g_in = g + l2)" if form == "reference" else
                                    "after the clip (g_in = g; the step adds l2 to the clipped row)"),
             "# L5: each row k of the table (an id of one field), in turn:"]
    for row in range(w0.shape[0]):
        label = row_label(model, row)
        l2_term = 2.0 * lam * w0[row]
        if row in position:
            u = position[row]
            g = data_grad[row]
            g_in, scale = seen["clip_in"][u], float(seen["scales"][u])
            kind = "zero row" if not g_in.any() else ("clipped" if scale < 1.0 else "not clipped")
            lines.append(f"-- {label}: {kind}")
            lines += [f"cnt = {counts[row]}  # L7: occurrences in the batch",
                      f"w = {fmt(w0[row])}  # L8: w_t^e[id], the row", f"||w|| = {fmt(np.linalg.norm(w0[row]))}  # L8",
                      f"g = {fmt(g)}  # L3: mean-over-batch gradient from the backward pass",
                      f"||g|| = {fmt(np.linalg.norm(g))}  # L3",
                      f"l2 = {fmt(l2_term)}  # 2 * lambda * w: "
                      + ("in L3's gradient (Keras adds it)" if form == "reference" else "added after L9"),
                      f"g_in = {fmt(g_in)}  # L6: g_t^e[id], what the clip sees",
                      f"||g_in|| = {fmt(np.linalg.norm(g_in))}  # L6: n_g"]
            threshold = counts[row] * max(seen["ratio"] * np.linalg.norm(w0[row]), seen["floor"])
            g_adam_says = "scale * g_in + l2 (L2 after the clip)" if form == "paper" else "scale * g_in"
        else:
            lines.append(f"-- {label}: absent from the batch")
            g_in = l2_term
            clip_absent = form == "reference"
            threshold = max(seen["ratio"] * np.linalg.norm(w0[row]), seen["floor"])
            norm = np.linalg.norm(g_in)
            scale = min(1.0, threshold / norm) if clip_absent and norm > threshold else 1.0
            lines += ["cnt = 0  # L7", f"w = {fmt(w0[row])}  # L8", f"||w|| = {fmt(np.linalg.norm(w0[row]))}  # L8",
                      f"g_in = {fmt(g_in)}  # L6: only the L2 term (the reference's dense L2 gradient)",
                      f"||g_in|| = {fmt(norm)}  # L6: n_g"]
            if clip_absent:
                g_adam_says = "scale * g_in (g_in is the L2 term; clipped as a row seen once)"
            else:
                lines.append("# paper form: rows absent from the batch are not clipped")
                g_adam_says = "g_in, the L2 term alone (not clipped)"
        if row in position or form == "reference":
            lines += [f"threshold = {fmt(threshold)}  # L8: max(cnt, 1) * max(ratio * ||w||, floor)",
                      f"scale = {fmt(scale)}  # L9: min(1, threshold / ||g_in||), g_c = scale * g_in"]
        g_out = m1[row] / (1.0 - a.beta1)   # the gradient Adam received: m = (1 - beta1) g at t = 1
        lines += [f"g_adam = {fmt(g_out)}  # L10, the gradient Opt gets: {g_adam_says}",
                  f"m = {fmt(m1[row])}  # L10: (1 - beta1) * g_adam",
                  f"v = {fmt(v1[row])}  # L10: (1 - beta2) * g_adam^2",
                  f"w_new = {fmt(w1[row])}  # L10: w - lr_t * m / (sqrt(v) + epsilon)"]
    return lines


LATER_STEP = 10   # the step of the side-by-side comparison: Adam's moments hold 9 earlier gradients


def side_by_side(model, params0: dict, batch, kernels, t: int) -> list[str]:
    """Update t of the reference form twice from the same state (after t - 1 CowClip steps on the
    batch): once with CowClip, once with the clip off (clip = 0, nothing else changed). Only the
    clip differs, so a row moves differently exactly where its scale is below 1."""
    config = StepConfig(clip_form="reference", **HYPER)
    params, state = copy.deepcopy(params0), AdamState.zeros_like(params0, np)
    for _ in range(t - 1):
        _, grads = batch_grads(model, params, batch, kernels)
        engine_step(model, params, grads, config, kernels, state)
    loss, grads = batch_grads(model, params, batch, kernels)
    a = config.adam
    lines = [f"--- update t = {t}" + (f" (after {t - 1} CowClip updates on the same batch)" if t > 1 else ""),
             f"loss = {fmt(loss)}  # L3, at w_{t}",
             f"lr_t = {fmt(bias_corrected_lr(config.lr_embed, t, a))}  "
             "# L10's Opt: lr_embed * sqrt(1 - beta2^t) / (1 - beta1^t)"]
    after = {}
    for name, step_config in (("clip", config), ("noclip", dataclasses.replace(config, clip=0.0))):
        p, s, g = copy.deepcopy(params), copy.deepcopy(state), copy.deepcopy(grads)
        after[name] = (p, s, engine_step(model, p, g, step_config, kernels, s))
    seen = after["clip"][2]
    ids = [int(i) for i in grads[EMBED_TABLE].ids]
    for u, row in enumerate(ids):
        scale = float(seen["scales"][u])
        g_in = seen["clip_in"][u]
        if not g_in.any():
            continue   # the zero row: nothing to compare
        w = np.array(params[EMBED_TABLE][row], dtype=np.float64)
        dw = {k: np.array(after[k][0][EMBED_TABLE][row], dtype=np.float64) - w for k in after}
        lines += [f"-- {row_label(model, row)}: " + ("clipped" if scale < 1.0 else "not clipped"),
                  f"m_prev = {fmt(state.m[EMBED_TABLE][row])}  # L10: Opt's m after update {t - 1}",
                  f"v_prev = {fmt(state.v[EMBED_TABLE][row])}  # L10: Opt's v after update {t - 1}",
                  f"g_in = {fmt(g_in)}  # L6: g + l2 (reference form)",
                  f"scale = {fmt(scale)}  # L9",
                  f"dw_clip = {fmt(dw['clip'])}  # L10 with g_c = scale * g_in",
                  f"dw_noclip = {fmt(dw['noclip'])}  # L10 with g_in unclipped",
                  f"ratio_dw = {fmt(np.linalg.norm(dw['clip']) / np.linalg.norm(dw['noclip']))}  "
                  "# L10: ||dw_clip|| / ||dw_noclip||"]
    return lines


def side_by_side_lines(model, params0: dict, batch, kernels) -> list[str]:
    a = StepConfig().adam
    return ["== the clip side by side (reference form): one update with CowClip and without, from the same state ==",
            "# Why t = 1 cannot show it: Keras Adam's first update is lr_t * m / (sqrt(v) + epsilon) with",
            "# m = (1 - beta1) g and v = (1 - beta2) g^2, i.e. lr_embed * g / (|g| + epsilon / sqrt(1 - beta2))",
            f"# per coordinate: about lr_embed * sign(g) = +-{fmt(HYPER['lr_embed'])} whatever ||g|| is. The clip",
            "# multiplies a row by scale > 0, which cancels: clipped, unclipped and absent rows move alike.",
            f"# At a later update m and v also hold the earlier gradients (beta1 = {fmt(a.beta1)}, "
            f"beta2 = {fmt(a.beta2)}),",
            "# so the scale no longer cancels: a clipped row's step (dw_clip) differs from the unclipped one",
            "# (dw_noclip) in size and direction, and a row that is not clipped moves exactly alike in both.",
            *side_by_side(model, params0, batch, kernels, 1),
            *side_by_side(model, params0, batch, kernels, LATER_STEP)]


def explain_lines() -> list[str]:
    kernels = get_backend("cpu")
    model, params, batch = tiny_setup()
    a = StepConfig().adam
    lines = ["One CowClip step of DeepFM, against Algorithm 1 (arXiv 2204.06240)",
             f"batch: B = {len(LABEL)}, F = {SCHEMA.num_fields}, K = {model.config.embed_dim}, V = {SCHEMA.total_rows}"
             " (row = offset of the field + id)"]
    lines += [f"ids {b} = {list(map(int, model.global_ids(batch.sparse)[b]))}  label {int(batch.label[b])}"
              for b in range(len(LABEL))]
    lines += [f"lambda = {fmt(HYPER['l2'])}  # the L2 weight", f"r = {fmt(HYPER['clip'])}  # Input: r",
              f"bound = {fmt(HYPER['bound'])}  # Input: zeta (or what the reference's form makes of it)",
              f"K = {model.config.embed_dim}", f"lr_embed = {fmt(HYPER['lr_embed'])}  # Init: Opt's learning rate",
              f"beta1 = {fmt(a.beta1)}  # Opt", f"beta2 = {fmt(a.beta2)}  # Opt", f"epsilon = {fmt(a.epsilon)}  # Opt",
              "# weights (DNN, linear.dense_w, bias) get their L2 term and Adam, never a clip;",
              "# the 1-dimensional linear table is not clipped (as the reference)."]
    for form in ("reference", "paper"):
        lines += explain_form(form, model, params, batch, kernels)
    lines += explain_sparse_branch(model, params, batch, kernels)
    return lines + side_by_side_lines(model, params, batch, kernels)


def occurrence_gradients(model, params: dict, batch, kernels) -> dict:
    """Row -> {batch row b: the mean-over-batch loss's gradient through occurrence b of the row}, as TF's
    IndexedSlices holds them: sample b's own gradient over B (the fields of a sample never share a row)."""
    from dataio.schema import Batch

    B, found = len(batch.label), {}
    for b in range(B):
        one = Batch(batch.sparse[b:b + 1], batch.dense[b:b + 1], batch.label[b:b + 1])
        grad = model.loss(params, one, kernels)[1][EMBED_TABLE]
        for i, r in zip(grad.ids, grad.rows):
            found.setdefault(int(i), {})[b] = np.array(r, dtype=np.float64) / B
    return found


def explain_sparse_branch(model, params0: dict, batch, kernels) -> list[str]:
    """The reference's untested IndexedSlices branch of clip.py (taken when l2 = 0) beside Algorithm 1."""
    params = copy.deepcopy(params0)
    _, grads = model.loss(params, batch, kernels)
    row_grad = grads[EMBED_TABLE]
    occurrences = occurrence_gradients(model, params, batch, kernels)
    w0 = np.array(params[EMBED_TABLE], dtype=np.float64)
    config = StepConfig(clip_form="reference", **{**HYPER, "l2": 0.0})
    seen = engine_step(model, params, grads, config, kernels)
    r = HYPER["clip"]
    lines = ["== l2 = 0: the reference's untested sparse branch ==",
             "# no L2 term: TF's embedding gradient stays one slice per occurrence, and clip.py's branch marked",
             "# 'FIXME: This part is not tested' clips each occurrence alone to r * ||w_k|| (no cnt_k, no floor);",
             "# Adam then sums a row's slices. The engine keeps Algorithm 1 (clipped sum, cnt_k, floor).",
             f"ratio = {fmt(seen['ratio'])}  # Input: r",
             f"floor = {fmt(seen['floor'])}  # Input: r * r * sqrt(K) * bound (clip.py's sparse branch has none)"]
    names = model.schema.sparse_names
    for u, row in enumerate(int(i) for i in row_grad.ids):
        field = int(np.searchsorted(model.offsets, row, side="right") - 1)
        weight_norm = np.linalg.norm(w0[row])
        lines += [f"-- row {row} (field {names[field]}, id {row - model.offsets[field]}): at l2 = 0",
                  f"cnt = {int(row_grad.counts[u])}  # L7: occurrences in the batch (the sparse branch ignores it)",
                  f"||w|| = {fmt(weight_norm)}  # L8"]
        reference = np.zeros(w0.shape[1])
        for b, g in sorted(occurrences[row].items()):
            norm = np.linalg.norm(g)
            threshold = r * weight_norm                  # clip.py: clip_t = ratio * ||w_k|| for each slice
            clipped = g * threshold / max(norm, threshold) if norm > 0 else g
            reference += clipped
            lines.append(f"g_occurrence_{b} = {fmt(g)}  # L3: batch row {b}'s own gradient over B, one slice")
        algorithm_1 = seen["clip_in"][u] * float(seen["scales"][u])
        gap = np.linalg.norm(reference - algorithm_1) / max(np.linalg.norm(algorithm_1), 1e-300)
        lines += [f"algorithm_1 = {fmt(algorithm_1)}  # L9: the summed g * min(1, cnt * max(ratio ||w||, floor) "
                  f"/ ||g||)",
                  f"reference_sparse = {fmt(reference)}  # L9 in clip.py's sparse branch: sum of g_occurrence * "
                  f"min(1, r ||w|| / ||g_occurrence||)",
                  f"gap = {fmt(gap)}  # L9: ||reference_sparse - algorithm_1|| / ||algorithm_1||"]
    return lines


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Print one CowClip step of DeepFM on a tiny batch, line by line against Algorithm 1."""
    from engine.run.runtime import configure_process

    configure_process()
    print("\n".join(explain_lines()))


if __name__ == "__main__":
    main()
