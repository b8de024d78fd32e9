"""Compiling trt_edge's small native CPU libraries (stdlib only: ``setup.py`` loads this file by path).

Each library is one C++ file with a plain C ABI, loaded with ctypes (no Python headers,
no build-time dependency beyond a C++ compiler). Flag sets are tried in order, so a
compiler without ``-fopenmp-simd`` or ``-march=native`` (some cross toolchains) still
yields a working, slower library. ``TRT_EDGE_NATIVE_PORTABLE=1`` (or the older
``TRT_EDGE_SPARSE_PORTABLE=1``) drops ``-march=native``: build once, run on other CPUs.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

_BASE = ["-O3", "-std=c++17", "-fPIC", "-fvisibility=hidden", "-pthread"]
# (label, compile flags, link flags). -fopenmp-simd only enables the `omp simd`
# vectorisation hints (no OpenMP runtime is linked).
CPU_FLAG_SETS: list[tuple[str, list[str], list[str]]] = [
    ("native+simd", _BASE + ["-march=native", "-fopenmp-simd"], ["-pthread"]),
    ("simd", _BASE + ["-fopenmp-simd"], ["-pthread"]),
    ("native", _BASE + ["-march=native"], ["-pthread"]),
    ("portable", _BASE, ["-pthread"]),
]


def cpu_flag_sets() -> list[tuple[str, list[str], list[str]]]:
    if "1" in (os.environ.get("TRT_EDGE_NATIVE_PORTABLE"), os.environ.get("TRT_EDGE_SPARSE_PORTABLE")):
        return [s for s in CPU_FLAG_SETS if "native" not in s[0]]
    return CPU_FLAG_SETS


def compile_shared_library(source: Path, output: Path, *, include_dir: Path | None = None,
                           cxx: str | None = None, what: str = "native library",
                           flag_sets: list[tuple[str, list[str], list[str]]] | None = None) -> tuple[Path, str]:
    """Compile ``source`` into the shared library ``output``, trying :data:`CPU_FLAG_SETS` in order.

    ``flag_sets`` replaces that list (a library with its own run-time SIMD dispatch builds
    without ``-march=native``). Returns ``(path, label of the flag set used)``. Raises ``RuntimeError`` with the
    compiler's messages when no flag set works. The write is atomic (compile to a temp
    file in the same folder, then rename), so a running process never sees half a file.
    """
    source = Path(source)
    if not source.is_file():
        raise RuntimeError(f"C++ source not found: {source}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler = cxx or os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or "c++"
    include = [f"-I{include_dir or source.parent}"]
    errors = []
    for label, cflags, lflags in (flag_sets if flag_sets is not None else cpu_flag_sets()):
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=output.parent)
        os.close(fd)
        cmd = [compiler, *cflags, "-shared", *include, str(source), "-o", tmp, *lflags]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as exc:  # no compiler at all
            os.unlink(tmp)
            raise RuntimeError(f"Could not run the C++ compiler '{compiler}' for the {what}: {exc}") from exc
        if proc.returncode == 0:
            os.replace(tmp, output)
            log.info("built %s with %s", output, label)
            return output, label
        os.unlink(tmp)
        errors.append(f"[{label}] {' '.join(cmd)}\n{proc.stderr.strip()[-2000:]}")
    raise RuntimeError(f"Could not compile the {what}:\n" + "\n".join(errors))
