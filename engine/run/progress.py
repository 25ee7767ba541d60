"""What the user sees while a run trains: the time left, and why the first step is slow.

    eta = (steps left in the run) * (seconds per step so far in this process)

Evaluations are not in the estimate (one per epoch by default, a few seconds each here).
"""
import os
from pathlib import Path

KERNEL_MODULES = ("adam", "fm", "scatter_add")   # engine/kernels modules compiled with cache=True


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def eta_seconds(steps_done: int, steps_total: int, seconds_so_far: float) -> float | None:
    """Seconds left at the mean step time of this process; None before the first step."""
    if steps_done <= 0:
        return None
    return max(steps_total - steps_done, 0) * seconds_so_far / steps_done


def numba_cache_places() -> list:
    """Where Numba keeps its cache of our kernels: next to engine/kernels, or under $NUMBA_CACHE_DIR."""
    places = [Path(__file__).resolve().parent / "kernels" / "__pycache__"]
    if os.environ.get("NUMBA_CACHE_DIR"):
        places.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    return places


def numba_kernels_cached(places: list | None = None) -> bool:
    """True when Numba's on-disk cache already holds entries (*.nbi index files) for our CPU kernels."""
    for place in numba_cache_places() if places is None else places:
        if place.is_dir() and any(next(place.rglob(f"{m}.*.nbi"), None) for m in KERNEL_MODULES):
            return True
    return False


def compile_notice(backend_name: str) -> str | None:
    """The line to print before the first step when it will compile kernels, else None."""
    if backend_name == "cpu" and not numba_kernels_cached():
        return ("first step: compiling the Numba CPU kernels (no cache for them on this machine yet; "
                "they are cached on disk, so this happens once): the first step takes longer than the rest")
    if backend_name == "cuda":
        return "first step: compiling the CUDA kernels for this process (Numba does not cache them), a few seconds"
    return None
