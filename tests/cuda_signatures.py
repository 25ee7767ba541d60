"""Every `@cuda.jit` kernel of engine/kernels, and the argument types the cuda backend launches it
with (tests/test_cuda_ptx.py compiles each for sm_90 and sm_80; tests/cudasim checks that a
training step launches nothing outside this table). Symbols: f the model's float dtype (float32
in training, float64 in the gradient checks), i64 ids, i32 the table Adam's position map.
"C": a contiguous array, "A": a strided view (the DNN's part of DeepFM's embedding gradient)."""
import importlib
import pkgutil

from numba import types as t

FLOATS = {"float32": t.float32, "float64": t.float64}
f64, i64, i32, boolean = t.float64, t.int64, t.int32, t.boolean


def A(dtype, ndim, layout="C"):
    return t.Array(dtype, ndim, layout)


def _table(f):
    return {
        "engine.kernels.adam._adam_rows_kernel":
            (A(f, 2), A(f, 2), A(f, 2), A(i64, 1), A(f, 2), f64, f64, f64, f64, A(i32, 1)),
        "engine.kernels.adam._adam_table_kernel":
            (A(f, 2), A(f, 2), A(f, 2), A(i32, 1), A(f, 2), f64, boolean, f64, f64, f64, f64, f64, f64, A(i32, 1)),
        "engine.kernels.cowclip._cowclip_rows_kernel":
            (A(f, 2), A(f, 2), A(i64, 1), A(i64, 1), f64, f64, A(f64, 1)),
        "engine.kernels.dense._bias_relu_kernel": (A(f, 2), A(f, 1)),
        "engine.kernels.dense._relu_mask_partial_kernel": (A(f, 2), A(f, 2), A(f, 2), A(f64, 2)),
        "engine.kernels.dense._column_sums_kernel": (A(f64, 2), A(f, 1)),
        "engine.kernels.weights_adam._adam_flat_kernel":
            (A(f, 1), A(f, 1), A(f, 1), A(f, 1), A(f64, 1), f64, f64, f64, f64, A(i32, 1)),
        "engine.kernels.fm._fm_forward_kernel": (A(f, 3), A(f, 1), A(f, 2)),
        "engine.kernels.fm._fm_backward_kernel": (A(f, 1), A(f, 3), A(f, 2), A(f, 3), boolean, A(f, 3)),
        "engine.kernels.scatter_add._chunk_sums_kernel":
            (A(i64, 1), A(f, 2), A(i64, 1), A(i64, 1), A(i64, 1), A(f64, 2)),
        "engine.kernels.scatter_add._segment_sums_kernel": (A(i64, 1), A(f64, 2), A(f, 2)),
    }


def _strided(f):
    """The launches that may take a strided view as well: DeepFM's DNN part of the embedding gradient
    (`add`, beside the dense features' columns), and a ReLU gradient a GPU is given as a view."""
    return {
        "engine.kernels.dense._relu_mask_partial_kernel": (A(f, 2, "A"), A(f, 2), A(f, 2), A(f64, 2)),
        "engine.kernels.fm._fm_backward_kernel": (A(f, 1), A(f, 3), A(f, 2), A(f, 3, "A"), boolean, A(f, 3)),
    }


def _signatures() -> dict:
    """{kernel: {label: argument types}}, label the float dtype (and "strided" for a view's variant)."""
    table = {}
    for label, f in FLOATS.items():
        for name, signature in _table(f).items():
            table.setdefault(name, {})[label] = signature
        for name, signature in _strided(f).items():
            table[name][f"{label} strided"] = signature
    return table


SIGNATURES = _signatures()


def cuda_kernels() -> dict:
    """{"engine.kernels.<module>.<name>": dispatcher} for every `@cuda.jit` kernel found by walking
    engine/kernels (a kernel added there and missing from SIGNATURES fails the compile test)."""
    import engine.kernels
    from numba.cuda.dispatcher import CUDADispatcher

    found = {}
    for info in pkgutil.iter_modules(engine.kernels.__path__):
        module = importlib.import_module(f"engine.kernels.{info.name}")
        for attr, value in vars(module).items():
            if isinstance(value, CUDADispatcher) and value.__module__ == module.__name__:
                found[f"{module.__name__}.{attr}"] = value
    return found
