"""The two relative errors the checks use, each named for what it measures.

    elementwise_rel_error(a, b) = max_i |a_i - b_i| / max(FLOOR, |a_i| + |b_i|)     (CS231n's form)
        every entry held to a relative error: the gradient checks (validate/audit/gradcheck.py), where
        both sides are float64 and an entry that should be 0 must be close to 0. FLOOR is 1e-6,
        not CS231n's 1e-8: why, in validate/audit/gradcheck.py's docstring.
    normwise_rel_error(got, want) = max |got - want| / max |want|
        the whole tensor held to a relative error of its largest entry: float32 comparisons of
        sums taken in a different order (GPU vs CPU, ours vs torch), where an entry that is a
        cancellation to near zero differs by more than any sensible elementwise bound.
"""
import numpy as np

FLOOR = 1e-6


def elementwise_rel_error(a, b, floor: float = FLOOR) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(floor, np.abs(a) + np.abs(b))))


def normwise_rel_error(got, want) -> float:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if want.size == 0:
        return 0.0
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))
