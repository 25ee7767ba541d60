"""The real training step, timed phase by phase: engine.step.train_step runs unchanged while the
layer functions the models call, the backend's CowClip kernel and the step's two update functions
are replaced by timed wrappers of themselves (and put back afterwards). Nothing is re-written.

Phases, in exclusive time (a wrapped call inside another counts to its own phase only):
    gather       model.global_ids, embedding_forward              the lookups of both tables
    fm           fm_forward, fm_backward
    dnn_fwd      dnn_forward, head_forward, cross_*_forward       the deep and cross towers
    dnn_bwd      dnn_backward, head_backward, cross_*_backward
    scatter      index_batch_ids, embedding_backward              the tables' RowGrads
    cowclip      backend.cowclip_rows
    adam_weights engine.step.update_weights                       L2 and Adam on the weights
    adam_tables  engine.step.update_tables, less cowclip          L2 and Adam on the tables
    other        the rest of the step: the linear part, the loss, concatenations, bookkeeping
"""
from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections import Counter, defaultdict
from contextlib import contextmanager

PHASES = ("gather", "fm", "dnn_fwd", "dnn_bwd", "scatter", "cowclip", "adam_weights", "adam_tables",
          "other")
LAYER_PHASES = {   # functions the model modules (models/*.py) call, by the name they import them under
    "embedding_forward": "gather",
    "fm_forward": "fm", "fm_backward": "fm",
    "dnn_forward": "dnn_fwd", "head_forward": "dnn_fwd", "cross_v1_forward": "dnn_fwd",
    "cross_v2_forward": "dnn_fwd", "cross_mix_forward": "dnn_fwd",
    "dnn_backward": "dnn_bwd", "head_backward": "dnn_bwd", "cross_v1_backward": "dnn_bwd",
    "cross_v2_backward": "dnn_bwd", "cross_mix_backward": "dnn_bwd",
    "index_batch_ids": "scatter", "embedding_backward": "scatter",
}
STEP_PHASES = {"update_weights": "adam_weights", "update_tables": "adam_tables"}


class PhaseTimer:
    """Wraps functions so that each call adds its exclusive wall time and a count to a phase."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter = Counter()
        self._nested: list[float] = []   # per open call: time spent in wrapped calls inside it

    def wrap(self, phase: str, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            self._nested.append(0.0)
            t0 = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                inside = self._nested.pop()
                self.seconds[phase] += elapsed - inside
                self.calls[phase] += 1
                if self._nested:
                    self._nested[-1] += elapsed

        return timed


@contextmanager
def timed_phases(model, kernels):
    """-> (timer, kernels with a timed cowclip_rows); the wrappers are removed on exit."""
    import engine.step

    timer = PhaseTimer()
    undo = []

    def patch(owner, name, phase):
        original = getattr(owner, name)
        setattr(owner, name, timer.wrap(phase, original))
        undo.append((owner, name, original))

    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("models."):
            for name, phase in LAYER_PHASES.items():
                if callable(getattr(module, name, None)):
                    patch(module, name, phase)
    for name, phase in STEP_PHASES.items():
        patch(engine.step, name, phase)
    model.global_ids = timer.wrap("gather", model.global_ids)      # an instance attribute shadows the method
    try:
        yield timer, dataclasses.replace(kernels, cowclip_rows=timer.wrap("cowclip", kernels.cowclip_rows))
    finally:
        del model.global_ids
        for owner, name, original in reversed(undo):
            setattr(owner, name, original)


def phase_step(model, params, state, batch, config, kernels) -> tuple[float, dict, dict]:
    """One engine.step.train_step, timed by phase. -> (loss, {phase: seconds}, {phase: calls});
    'other' is the step's wall time less the named phases."""
    import engine.step

    with timed_phases(model, kernels) as (timer, timed_kernels):
        t0 = time.perf_counter()
        info = engine.step.train_step(model, params, state, batch, config, timed_kernels)
        total = time.perf_counter() - t0
    seconds = {p: timer.seconds.get(p, 0.0) for p in PHASES if p != "other"}
    seconds["other"] = total - sum(seconds.values())
    return info["loss"], seconds, dict(timer.calls)
