"""Child process of tests/test_cuda_ptx.py: compiles every `@cuda.jit` kernel of engine/kernels in
every signature of tests/cuda_signatures.py for one compute capability, without a GPU, and prints
one JSON line per (kernel, signature) with what ptxas and the SASS say about it.

    python tests/cuda_compile.py 9.0      (from the repository root)

numba-cuda asks the current device for its compute capability when a kernel calls an `@njit`
helper (engine/kernels/common.py `for_cuda`); with no GPU that lookup is answered with the
capability asked for here. ptxas and nvdisasm come from the nvidia-cuda-nvcc / nvidia-cuda-nvdisasm
wheels (setup.cfg extra `cuda-compile`)."""
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def toolkit_binary(name: str) -> str:
    """ptxas / nvdisasm of the pip CUDA wheels (nvidia/cu13/bin), else the one on PATH."""
    import shutil

    import nvidia

    for base in nvidia.__path__:
        for found in sorted(Path(base).glob(f"cu*/bin/{name}")):
            return str(found)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found (pip install 'cowclip-engine[cuda-compile]')")
    return found


def pretend_device(cc):
    """numba-cuda's current-device lookups answer `cc` (compile only: nothing is launched)."""
    from engine.kernels.common import cuda  # noqa: F401  (the numpy shims run first)
    from numba.cuda import dispatcher

    class Device:
        compute_capability = cc

    dispatcher.get_current_device = lambda: Device()


PTXAS_LINE = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def resources(ptx: str, cc, workdir: Path) -> dict:
    arch = f"sm_{cc[0]}{cc[1]}"
    (workdir / "k.ptx").write_text(ptx)
    out = subprocess.run([toolkit_binary("ptxas"), "-v", f"-arch={arch}", "-o", str(workdir / "k.cubin"),
                          str(workdir / "k.ptx")], capture_output=True, text=True, check=True).stderr
    frame, spill_stores, spill_loads = map(int, PTXAS_LINE.search(out).groups())
    registers = int(re.search(r"Used (\d+) registers", out).group(1))
    sass = subprocess.run([toolkit_binary("nvdisasm"), "-c", str(workdir / "k.cubin")],
                          capture_output=True, text=True, check=True).stdout
    opcodes = re.findall(r"^\s+/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", sass, re.M)
    names = [op.split(".")[0] for op in opcodes]
    return {"registers": registers, "stack_frame": frame, "spill_stores": spill_stores, "spill_loads": spill_loads,
            "local_memory_ops": sum(n in ("LDL", "STL") for n in names),
            "atomics": sum(n in ("ATOM", "ATOMG", "RED", "ATOMS", "REDG") for n in names),
            "f64_ops": sum(n in ("DADD", "DMUL", "DFMA") for n in names),
            "f32_ops": sum(n in ("FADD", "FMUL", "FFMA") for n in names)}


def main(cc_text: str) -> None:
    cc = tuple(int(x) for x in cc_text.split("."))
    pretend_device(cc)
    from cuda_signatures import SIGNATURES, cuda_kernels

    from engine.kernels.common import cuda

    kernels = cuda_kernels()
    with tempfile.TemporaryDirectory() as tmp:
        for name, kernel in sorted(kernels.items()):
            for label, signature in SIGNATURES.get(name, {}).items():
                ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc)
                print(json.dumps({"kernel": name, "signature": label, **resources(ptx, cc, Path(tmp))}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
