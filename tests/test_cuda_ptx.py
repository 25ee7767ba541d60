"""Every `@cuda.jit` kernel of engine/kernels, compiled for sm_90 and sm_80 in every signature the
cuda backend launches (tests/cuda_signatures.py), without a GPU, by numba-cuda with the NVVM of
its pip wheels; ptxas and nvdisasm (pip wheels too) then say what the GPU would run:
    no stack frame, no spills, no local loads or stores   (every kernel runs per row or per element)
    no atomics                                              (sums in a fixed order: reproducible)
    float64 arithmetic in the kernels documented so, the model's dtype in the others.
Needs the `cuda-compile` extra (numba-cuda[cu13], nvidia-cuda-nvcc, nvidia-cuda-nvdisasm; no GPU);
skipped where it is not installed. A kernel added to engine/kernels and missing from the table fails."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CAPABILITIES = ("9.0", "8.0")

# the kernels whose arithmetic is float64 whatever the model's dtype (their docstrings say so);
# every other kernel computes in the model's dtype
FLOAT64_ARITHMETIC = {
    "engine.kernels.adam._adam_rows_kernel", "engine.kernels.adam._adam_table_kernel",
    "engine.kernels.cowclip._cowclip_rows_kernel", "engine.kernels.weights_adam._adam_flat_kernel",
    "engine.kernels.fm._fm_forward_kernel", "engine.kernels.fm._fm_backward_kernel",
    "engine.kernels.scatter_add._chunk_sums_kernel", "engine.kernels.scatter_add._segment_sums_kernel",
    "engine.kernels.dense._relu_mask_partial_kernel", "engine.kernels.dense._column_sums_kernel",
}


def _toolchain_missing() -> str | None:
    try:
        import numba_cuda  # noqa: F401
    except ImportError:
        return "numba-cuda is not installed (pip install 'cowclip-engine[cuda-compile]')"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cuda_compile import toolkit_binary

    try:
        toolkit_binary("ptxas"), toolkit_binary("nvdisasm")
    except (FileNotFoundError, ImportError) as missing:
        return f"ptxas/nvdisasm not found ({missing})"
    return None


@pytest.fixture(scope="module")
def compiled():
    """{(cc, kernel, signature): resources}, the two capabilities compiled in parallel children."""
    reason = _toolchain_missing()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    children = {cc: subprocess.Popen([sys.executable, str(ROOT / "tests" / "cuda_compile.py"), cc], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for cc in CAPABILITIES}
    found = {}
    for cc, child in children.items():
        out, err = child.communicate(timeout=600)
        if child.returncode and "nvvm" in err.lower():
            pytest.skip("numba-cuda finds no NVVM (pip install 'cowclip-engine[cuda-compile]')")
        assert child.returncode == 0, err[-3000:]
        for line in out.splitlines():
            row = json.loads(line)
            found[(cc, row.pop("kernel"), row.pop("signature"))] = row
    return found


def test_every_cuda_kernel_is_in_the_signature_table():
    if _toolchain_missing():
        pytest.skip(_toolchain_missing())
    code = ("import sys; sys.path.insert(0, 'tests'); from cuda_signatures import SIGNATURES, cuda_kernels; "
            "print(sorted(cuda_kernels())); print(sorted(SIGNATURES))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}).stdout
    kernels, table = (eval(line) for line in out.splitlines())
    assert len(kernels) >= 11
    assert kernels == table, f"no signatures for {set(kernels) - set(table)}; gone: {set(table) - set(kernels)}"


def test_every_kernel_compiles_for_sm90_and_sm80_in_every_signature(compiled):
    sys.path.insert(0, str(ROOT / "tests"))
    from cuda_signatures import SIGNATURES

    want = {(cc, k, s) for cc in CAPABILITIES for k, sigs in SIGNATURES.items() for s in sigs}
    assert set(compiled) == want


def test_no_stack_frame_spill_or_local_memory(compiled):
    bad = {key: r for key, r in compiled.items()
           if r["stack_frame"] or r["spill_stores"] or r["spill_loads"] or r["local_memory_ops"]}
    assert not bad, bad


def test_no_atomics(compiled):
    assert not {key: r["atomics"] for key, r in compiled.items() if r["atomics"]}


def test_float_width_of_each_kernel_as_documented(compiled):
    for (cc, kernel, signature), r in compiled.items():
        if kernel in FLOAT64_ARITHMETIC or signature == "float64":
            assert r["f64_ops"] > 0, (cc, kernel, signature, r)
        else:                                      # float32 arithmetic in a float32 model
            assert r["f64_ops"] == 0 and r["f32_ops"] > 0, (cc, kernel, signature, r)
