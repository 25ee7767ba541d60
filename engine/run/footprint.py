"""Memory a run needs, estimated before anything large is allocated, against the memory there is.

Symbols: V table rows, K embedding dim, F sparse fields, D dense features, d = F K + D the deep
input's width, H the DNN's hidden widths, B batch rows, N split rows.

    parameters      every array of model.init_params (tables V x K and V x 1 dominate)
    Adam state      2 x parameters (m and v)
    one batch       B x (ids, dense, label, row ids) + B x 3 (F K + d + sum H [+ cross layers x d]) floats:
                    each activation, its cache and its gradient; U x K unique-row gradients
    data            the train split when the reader holds it in memory, and the test split
This is a lower bound (it leaves out the allocator's slack and short-lived temporaries), so a
run it refuses could not have run; one it accepts may still run short by a little.
"""
import math
import os

import numpy as np


GIB = 1 << 30


class MemoryShortError(ValueError):
    """The run cannot fit; the message gives the estimate, its parts and what is available."""


def batch_bytes(model, rows: int) -> int:
    """Activations, caches and gradients of one batch of `rows` rows (a lower bound)."""
    F, D, K = model.schema.num_fields, model.schema.num_dense, model.config.embed_dim
    itemsize = np.dtype(model.config.dtype).itemsize
    inputs = rows * (4 * (F + D + 1) + 8 * F)                     # sparse, dense, label, int64 table rows
    width = F * K * model.uses_embedding                          # embeddings of the batch
    names = model.param_shapes()
    if any(name.startswith("dnn.") for name in names):
        width += model.input_width + sum(model.config.dnn_hidden)
    if any(name.startswith("cross") for name in names):
        width += model.config.cross_layers * model.input_width
    unique_rows = min(rows * F, model.schema.total_rows) * (K + 1)  # RowGrad rows of both tables
    return inputs + 3 * rows * width * itemsize + unique_rows * itemsize


def split_bytes(num_fields: int, num_dense: int, rows: int) -> int:
    """A split held in memory: sparse int32, dense and label float32 (and a synthetic set's prob)."""
    return rows * 4 * (num_fields + num_dense + 2)


def estimate(model, batch_rows: int, train_rows_in_memory: int, test_rows: int) -> dict:
    """-> bytes of each part: params, adam, batch, data."""
    itemsize = np.dtype(model.config.dtype).itemsize
    params = itemsize * sum(math.prod(shape) for shape in model.param_shapes().values())
    F, D = model.schema.num_fields, model.schema.num_dense
    return {"params": params, "adam": 2 * params, "batch": batch_bytes(model, batch_rows),
            "data": split_bytes(F, D, train_rows_in_memory + test_rows)}


def available_host_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (what can be allocated without swapping), else free pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_device_bytes(xp) -> int | None:
    """Free memory of the current CUDA device (CuPy), None on the CPU."""
    if xp is np:
        return None
    free, _total = xp.cuda.runtime.memGetInfo()
    return int(free + xp.get_default_memory_pool().free_bytes())


def check_fits(parts: dict, xp) -> None:
    """Refuse, with the numbers, a run whose estimate exceeds the memory available where it lives.
    On the GPU the parameters, Adam state and batch live on the device and the data on the host."""
    on_device = xp is not np
    where = {"device": ("params", "adam", "batch") if on_device else (), "host": ("data",) if on_device else tuple(parts)}
    for place, keys in where.items():
        if not keys:
            continue
        available = available_device_bytes(xp) if place == "device" else available_host_bytes()
        need = sum(parts[k] for k in keys)
        if available is not None and need > available:
            detail = ", ".join(f"{k} {parts[k] / GIB:.2f}" for k in keys)
            source = "free on the GPU" if place == "device" else "available (MemAvailable)"
            raise MemoryShortError(
                f"not enough memory: this run needs at least {need / GIB:.2f} GiB ({detail} GiB), "
                f"{available / GIB:.2f} GiB is {source}; use a smaller --bs or --sparse_embed_dim, or --accum")
