"""CUDA SparseLinear kernels: compiled here with nvcc (CPU tier); run against the reference
on a GPU (``gpu`` tier, skipped without one)."""
from __future__ import annotations

import shutil
import subprocess
import time

import numpy as np
import pytest

from trt_edge.sparse import build, formats
from trt_edge.sparse.reference import error_bound, sparse_linear_reference

from sparse_helpers import random_sparse

NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not found: install the CUDA toolkit to compile-check "
                                         "csrc/sparse/sparse_linear_kernels.cu")
def test_cuda_sources_compile_and_link_for_all_targets(tmp_path):
    """SASS for Orin (sm_87), Hopper (sm_90), Blackwell (sm_100), Thor (sm_110), RTX 50
    (sm_120) and PTX for compute_120 (JIT on newer GPUs), linked into a shared library."""
    out = tmp_path / "libtrt_edge_sparse_cuda.so"
    cmd = build.cuda_compile_command(out, nvcc=NVCC)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert out.stat().st_size > 0
    print(f"nvcc: {time.perf_counter() - t0:.1f} s for sm_{', sm_'.join(build.CUDA_ARCHS)} + PTX")
    if shutil.which("cuobjdump"):
        listing = subprocess.run(["cuobjdump", "--list-elf", str(out)], capture_output=True,
                                 text=True).stdout
        for arch in build.CUDA_ARCHS:
            assert f"sm_{arch}" in listing, f"no SASS for sm_{arch}"
    if shutil.which("nm"):
        symbols = subprocess.run(["nm", "-D", str(out)], capture_output=True, text=True).stdout
        for name in ("tes_cuda_linear_csr_f32", "tes_cuda_linear_csr_f16", "tes_cuda_linear_bsr_f32",
                     "tes_cuda_linear_bsr_f16"):
            assert name in symbols
    # The launchers validate on the host before touching the driver, so their user-error
    # statuses are checkable without a GPU (cudaErrorInvalidValue = 1, misaligned = 716).
    from trt_edge.sparse.cuda import _load
    lib = _load(str(out))
    assert lib.tes_cuda_linear_csr_f32(-1, 4, 4, None, None, None, None, None, None, None) == 1
    assert lib.tes_cuda_linear_csr_f32(2, 4, 4, None, None, None, None, None, None, None) == 1
    assert lib.tes_cuda_linear_csr_f16(0, 4, 4, None, None, None, None, None, None, None) == 0
    assert lib.tes_cuda_linear_bsr_f32(1, 4, 4, 3, 5, 16, 16, 16, None, 16, 16, None) == 1
    assert lib.tes_cuda_linear_bsr_f32(1, 4, 4, 1, 4, 16, 16, 20, None, 16, 16, None) == 716
    assert lib.tes_cuda_error_string(716) == b"misaligned address"


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
def test_cpu_sources_compile_without_warnings():
    src = build.repo_root() / "csrc" / "sparse" / "sparse_linear_cpu.cpp"
    proc = subprocess.run(["c++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
                           "-fopenmp-simd", str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]


CUDA_FORMATS = [("csr", None)] + [("bsr", b) for b in formats.BLOCK_SHAPES]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("fmt,block", CUDA_FORMATS, ids=lambda v: str(v))
def test_cuda_kernels_match_reference(sparse_spec, fresh_rng, dtype, fmt, block):
    from trt_edge.sparse.cuda import sparse_linear_cuda
    tol = sparse_spec["tolerances"][np.dtype(dtype).name]
    for n, k in [(1, 1), (7, 5), (33, 17), (257, 130), (1024, 1024)]:
        for density in (0.0, 0.1, 1.0):
            w = random_sparse(fresh_rng, n, k, density, dtype, block or (1, 1))
            if n > 2:
                w[n // 2] = 0
            weight = formats.convert(w, fmt, block)
            bias = fresh_rng.standard_normal(n).astype(dtype)
            for m in (1, 3, 8, 32, 64, 65):
                x = fresh_rng.standard_normal((m, k)).astype(dtype)
                y = sparse_linear_cuda(x, weight, bias)
                ref = sparse_linear_reference(x, weight, bias)
                err = np.abs(y.astype(np.float64) - ref)
                assert np.all(np.isfinite(y)), (n, k, m, "unwritten outputs")
                assert np.all(err <= error_bound(x, weight, bias, ref, tol)), (n, k, m, err.max())


@pytest.mark.gpu
def test_cuda_agrees_with_cpu_kernel(sparse_cpu, fresh_rng):
    from trt_edge.sparse.cuda import sparse_linear_cuda
    w = random_sparse(fresh_rng, 4096, 4096, 0.1)
    for weight in (formats.to_csr(w), formats.to_bsr(w, (1, 4))):
        for m in (1, 8, 32):
            x = fresh_rng.standard_normal((m, 4096)).astype(np.float32)
            np.testing.assert_allclose(sparse_linear_cuda(x, weight), sparse_cpu.sparse_linear(x, weight),
                                       rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_cuda_rejects_unsupported_block():
    from trt_edge.errors import RunnerError
    from trt_edge.sparse.cuda import sparse_linear_cuda
    weight = formats.to_bsr(np.ones((6, 10), np.float32), (3, 5))
    with pytest.raises(RunnerError, match="launch"):
        sparse_linear_cuda(np.ones((1, 10), np.float32), weight)
