"""Building the native sparse libraries (stdlib only: ``setup.py`` loads this file by path).

The CPU library (``csrc/sparse/sparse_linear_cpu.cpp``) is built at install time by
``setup.py``; ``python -m trt_edge.sparse.build`` rebuilds it in place (e.g. after
editing the C++ or after installing a compiler). The CUDA sources are compiled by
:func:`compile_cuda_library` (used by the GPU benchmark's loader and by the nvcc
compile check); nothing here needs TensorRT.

The CPU library is built for the architecture's baseline (no ``-march=native``): it holds
its kernels compiled for AVX-512, AVX2+FMA and baseline x86-64 and picks one at run time
from the CPU's features (``TRT_EDGE_SPARSE_ISA=avx512|avx2|baseline`` overrides), so one
build runs on any x86-64 machine; on aarch64 (Jetson) the baseline path is NEON.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
#: Where the loader looks for the CPU library (a folder without ``__init__.py``, so
#: ``pkgutil.walk_packages`` never mistakes the .so for a Python module).
LIB_DIR = PACKAGE_DIR / "_lib"
CPU_LIB_NAME = "libtrt_edge_sparse.so"
CUDA_LIB_NAME = "libtrt_edge_sparse_cuda.so"

# The flag sets and the compile loop are shared with the other native library (csrc/calib).
try:
    from .._native_build import CPU_FLAG_SETS, compile_shared_library, cpu_flag_sets  # noqa: F401
except ImportError:  # loaded by path from setup.py: no package context
    import importlib.util as _ilu
    _spec = _ilu.spec_from_file_location("_trt_edge_native_build", PACKAGE_DIR.parent / "_native_build.py")
    _mod = _ilu.module_from_spec(_spec)  # type: ignore[arg-type]
    _spec.loader.exec_module(_mod)  # type: ignore[union-attr]
    CPU_FLAG_SETS, compile_shared_library, cpu_flag_sets = (  # noqa: F811
        _mod.CPU_FLAG_SETS, _mod.compile_shared_library, _mod.cpu_flag_sets)

#: sm targets: Jetson Orin (87), Hopper (90), Blackwell datacenter (100), Thor (110; CUDA 13
#: renamed Thor from sm_101), Blackwell desktop (120). SASS for each, plus PTX of the
#: newest for forward compatibility.
CUDA_ARCHS = ("87", "90", "100", "110", "120")


_PORTABLE = ["-O3", "-std=c++17", "-fPIC", "-fvisibility=hidden", "-pthread"]
#: The sparse library's flag sets: portable on purpose (its SIMD levels come from per-region
#: target pragmas and run-time dispatch), ``-fopenmp-simd`` where the compiler has it.
SPARSE_CPU_FLAG_SETS: list[tuple[str, list[str], list[str]]] = [
    ("dispatch+simd", _PORTABLE + ["-fopenmp-simd"], ["-pthread"]),
    ("dispatch", _PORTABLE, ["-pthread"]),
]


def repo_root() -> Path | None:
    """The source checkout holding ``csrc/`` (None for a non-editable install)."""
    root = PACKAGE_DIR.parent.parent
    return root if (root / "csrc" / "sparse").is_dir() else None


def compile_cpu_library(output: Path | None = None, *, cxx: str | None = None,
                        source_dir: Path | None = None) -> tuple[Path, str]:
    """Compile the CPU library to ``output``, trying :data:`SPARSE_CPU_FLAG_SETS` in order.

    Returns ``(path, label of the flag set used)``. Raises ``RuntimeError`` with the
    compiler's messages when no flag set works. The write is atomic (compile to a temp
    file in the same folder, then rename) so a running process never sees half a file.
    """
    src_dir = source_dir or ((repo_root() or Path.cwd()) / "csrc" / "sparse")
    return compile_shared_library(src_dir / "sparse_linear_cpu.cpp", Path(output or LIB_DIR / CPU_LIB_NAME),
                                  include_dir=src_dir, cxx=cxx, what="sparse CPU library",
                                  flag_sets=SPARSE_CPU_FLAG_SETS)


def cuda_compile_command(output: Path, *, archs: tuple[str, ...] = CUDA_ARCHS, nvcc: str = "nvcc",
                         source_dir: Path | None = None, ptx_arch: str | None = None) -> list[str]:
    """The nvcc command line building the CUDA kernels into a shared library."""
    src_dir = source_dir or ((repo_root() or Path.cwd()) / "csrc" / "sparse")
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    ptx = ptx_arch or archs[-1]
    gencode.append(f"-gencode=arch=compute_{ptx},code=compute_{ptx}")
    return [nvcc, "-O3", "-std=c++17", "--shared", "--threads", "2", "-Xcompiler", "-fPIC", "-lineinfo",
            *gencode, f"-I{src_dir}", str(src_dir / "sparse_linear_kernels.cu"), "-o", str(output)]


def compile_cuda_library(output: Path | None = None, *, archs: tuple[str, ...] = CUDA_ARCHS,
                         nvcc: str | None = None, timeout: float = 600.0) -> Path:
    """Compile ``sparse_linear_kernels.cu`` to a shared library (needs nvcc, not a GPU)."""
    nvcc = nvcc or os.environ.get("NVCC") or shutil.which("nvcc")
    if not nvcc:
        raise RuntimeError("nvcc not found: install the CUDA toolkit or set NVCC=/path/to/nvcc.")
    output = Path(output or LIB_DIR / CUDA_LIB_NAME)
    output.parent.mkdir(parents=True, exist_ok=True)
    cmd = cuda_compile_command(output, archs=archs, nvcc=nvcc)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"nvcc failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    return output


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Rebuild trt_edge's native sparse libraries.")
    ap.add_argument("--cuda", action="store_true", help="also build the CUDA kernels (needs nvcc)")
    ap.add_argument("--arch", action="append", help="CUDA sm target, e.g. 87 (repeatable)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    path, label = compile_cpu_library()
    print(f"CPU library: {path} ({label})")
    if args.cuda:
        cuda = compile_cuda_library(archs=tuple(args.arch) if args.arch else CUDA_ARCHS)
        print(f"CUDA library: {cuda}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
