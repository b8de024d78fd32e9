"""The calibration kernels (csrc/calib) against plain-loop references in C++
(csrc/calib/tests/check_kernels.cpp), built for this machine and for aarch64 (the Jetson CPU),
the latter run under qemu-user: Python cannot load that build, so the check is a program.

The host build is quick (~2 s); the aarch64 one is opt-in (``--run-slow``) and needs Debian's
g++-aarch64-linux-gnu and qemu-user, skipped with the reason otherwise.
"""
from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "csrc" / "calib"
CROSS = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64"
FLAGS = ["-O3", "-std=c++17", "-fopenmp-simd", "-Wall", "-Wextra", "-Werror"]


def _build(compiler: str, out: Path, extra: list[str]) -> None:
    if not (SRC / "tests" / "check_kernels.cpp").is_file():
        pytest.skip("csrc/calib is not in this checkout (a non-editable install)")
    proc = subprocess.run([compiler, *FLAGS, *extra, str(SRC / "abs_histogram.cpp"),
                           str(SRC / "tests" / "check_kernels.cpp"), "-o", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _passed(stdout: str, arch: str) -> None:
    last = stdout.strip().splitlines()[-1]
    assert f", {arch}):" in last, stdout
    done, total = last.rsplit(" ", 3)[-3].split("/")
    assert done == total and int(total) >= 80, stdout


def test_host_build_matches_the_plain_loop_references(tmp_path):
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("needs a C++ compiler")
    exe = tmp_path / "check_kernels"
    _build(compiler, exe, [])
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    _passed(run.stdout, "x86-64" if platform.machine() in ("x86_64", "AMD64") else
            "aarch64" if platform.machine() in ("aarch64", "arm64") else "other")


@pytest.mark.slow
def test_aarch64_build_matches_the_plain_loop_references_under_qemu(tmp_path):
    if not shutil.which(CROSS) or not shutil.which(QEMU):
        pytest.skip(f"needs {CROSS} and {QEMU} (apt-get install g++-aarch64-linux-gnu qemu-user)")
    exe = tmp_path / "check_kernels"
    _build(CROSS, exe, ["-static"])
    run = subprocess.run([QEMU, str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    _passed(run.stdout, "aarch64")


@pytest.mark.slow
def test_the_package_build_cross_compiles_the_kernel_for_aarch64(tmp_path):
    """What ``pip install`` runs, with an aarch64 compiler: ``-march=native`` is refused by a cross
    compiler, so the flag sets fall back to a portable one and the library is still built."""
    if not shutil.which(CROSS):
        pytest.skip(f"needs {CROSS} (apt-get install g++-aarch64-linux-gnu)")
    from trt_edge._native_build import compile_shared_library
    path, label = compile_shared_library(SRC / "abs_histogram.cpp", tmp_path / "libtrt_edge_calib.so", cxx=CROSS,
                                         what="calibration kernel")
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183, label  # EM_AARCH64
    assert "native" not in label
