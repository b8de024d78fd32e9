"""The aarch64 (Jetson CPU, NEON) build of the sparse CPU kernels, cross-compiled and run under
qemu-user against a float64 reference (csrc/sparse/tests/check_kernels.cpp).

Slow (the cross compile takes ~30 s) and needs Debian's g++-aarch64-linux-gnu and qemu-user;
skipped with the reason otherwise.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from trt_edge.sparse import build

CROSS = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64"


@pytest.mark.slow
def test_aarch64_build_matches_reference_under_qemu(tmp_path):
    if not shutil.which(CROSS) or not shutil.which(QEMU):
        pytest.skip(f"needs {CROSS} and {QEMU} (apt-get install g++-aarch64-linux-gnu qemu-user)")
    src = build.repo_root() / "csrc" / "sparse"
    exe = tmp_path / "check_kernels"
    proc = subprocess.run([CROSS, "-O3", "-std=c++17", "-pthread", "-fopenmp-simd", "-static", "-Wall",
                           "-Wextra", "-Werror", f"-I{src}", str(src / "sparse_linear_cpu.cpp"),
                           str(src / "tests" / "check_kernels.cpp"), "-o", str(exe)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = subprocess.run([QEMU, str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "baseline: 24/24" in run.stdout and "NEON" in run.stdout
