"""The native CPU SparseLinear kernels against the NumPy reference (spec tolerances).

Fresh random inputs every run; outputs are poisoned with NaN before each call so an output
the kernel forgot to write cannot pass; edge shapes from the spec are covered.
"""
from __future__ import annotations

import numpy as np
import pytest

from trt_edge.errors import InvalidInputError, MissingDependencyError
from trt_edge.sparse import formats
from trt_edge.sparse.reference import error_bound, sparse_linear_reference

from sparse_helpers import random_sparse

# (N, K, M): odd sizes, one column, one row, batch 0, K = 0, larger than a tile
CASES = [(1, 1, 1), (7, 5, 1), (33, 17, 3), (64, 100, 9), (13, 29, 20), (5, 1, 4), (1, 64, 2),
         (40, 37, 0), (6, 0, 3), (130, 257, 17), (96, 64, 64)]
FORMATS = [("csr", None)] + [("bsr", b) for b in formats.BLOCK_SHAPES] + [("bsr", (3, 5))]
DTYPES = [np.float32, np.float16]


def _check(cpu, spec, x, weight, bias, threads=0):
    dtype = weight.values.dtype
    out = np.full((x.shape[0], weight.shape[0]), np.nan, dtype=dtype)  # poison
    y = cpu.sparse_linear(x, weight, bias, out=out, num_threads=threads, check=True)
    assert y is out
    ref = sparse_linear_reference(x, weight, bias)
    tol = spec["tolerances"][np.dtype(dtype).name]
    bound = error_bound(x, weight, bias, ref, tol)
    err = np.abs(y.astype(np.float64) - ref)
    assert np.all(np.isfinite(y)), "kernel left outputs unwritten"
    assert np.all(err <= bound), f"max err {err.max():.3g}, bound there {bound.flat[err.argmax()]:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("fmt,block", FORMATS, ids=lambda v: str(v))
@pytest.mark.parametrize("density", [0.0, 0.15, 1.0], ids=["all-zero", "sparse", "dense"])
def test_kernel_matches_reference(sparse_cpu, sparse_spec, fresh_rng, dtype, fmt, block, density):
    for n, k, m in CASES:
        w = random_sparse(fresh_rng, n, k, density, dtype, block or (1, 1))
        if n > 2:
            w[n // 2] = 0  # an empty row
        weight = formats.convert(w, fmt, block)
        x = fresh_rng.standard_normal((m, k)).astype(dtype)
        bias = fresh_rng.standard_normal(n).astype(dtype)
        _check(sparse_cpu, sparse_spec, x, weight, bias)
        _check(sparse_cpu, sparse_spec, x, weight, None)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts_agree(sparse_cpu, sparse_spec, fresh_rng, threads):
    w = random_sparse(fresh_rng, 300, 200, 0.2)
    for weight in (formats.to_csr(w), formats.to_bsr(w, (4, 4))):
        for m in (1, 5, 33):
            x = fresh_rng.standard_normal((m, 200)).astype(np.float32)
            _check(sparse_cpu, sparse_spec, x, weight, None, threads)


def test_leading_dims_are_batch(sparse_cpu, fresh_rng):
    w = random_sparse(fresh_rng, 24, 16, 0.3)
    weight = formats.to_csr(w)
    x = fresh_rng.standard_normal((2, 3, 16)).astype(np.float32)
    y = sparse_cpu.sparse_linear(x, weight)
    assert y.shape == (2, 3, 24)
    np.testing.assert_allclose(y, sparse_linear_reference(x, weight), rtol=1e-5, atol=1e-5)


def test_fp16_extremes_round_like_numpy(sparse_cpu):
    # One non-zero per row: y = w * x exactly in FP32, then one rounding to FP16, which must
    # match NumPy's float16 rounding (round-to-nearest-even, subnormals, overflow to inf).
    vals = np.array([1.0009765625, 3.0e-5, 7.0e-8, 300.0, -1.0, 1.0, 0.5], np.float16)
    xs = np.array([1.0009765625, 1.0, 1.0, 300.0, 65504.0, 2.0 ** -24, 2.0 ** -24], np.float16)
    weight = formats.to_csr(np.diag(vals))
    y = sparse_cpu.sparse_linear(xs[None, :], weight)
    expected = (vals.astype(np.float32) * xs.astype(np.float32)).astype(np.float16)[None, :]
    assert np.array_equal(y.view(np.uint16), expected.view(np.uint16))


def test_user_errors_are_reported(sparse_cpu):
    w = formats.to_csr(np.eye(4, dtype=np.float32))
    with pytest.raises(InvalidInputError, match="last dimension"):
        sparse_cpu.sparse_linear(np.ones((2, 5), np.float32), w)
    with pytest.raises(InvalidInputError, match="bias"):
        sparse_cpu.sparse_linear(np.ones((2, 4), np.float32), w, np.ones(3, np.float32))
    bad = formats.CsrWeight((4, 4), w.row_ptr, np.array([0, 1, 2, 9], np.int32), w.values)
    with pytest.raises(InvalidInputError):
        sparse_cpu.sparse_linear(np.ones((2, 4), np.float32), bad, check=True)


def test_native_status_codes(sparse_cpu):
    """The C ABI itself rejects bad arguments (no Python checks in between)."""
    lib = sparse_cpu.load_library()
    rp = np.array([0, 1, 2], np.int32)
    ci = np.array([0, 7], np.int32)  # 7 >= K
    v = np.ones(2, np.float32)
    x = np.ones((1, 2), np.float32)
    y = np.zeros((1, 2), np.float32)
    st = lib.tes_linear_csr_f32(1, 2, 2, rp.ctypes.data, ci.ctypes.data, v.ctypes.data, None,
                                x.ctypes.data, y.ctypes.data, 0, 1)
    assert st == 3 and b"index" in lib.tes_status_string(st)
    assert lib.tes_linear_csr_f32(-1, 2, 2, None, None, None, None, None, None, 0, 1) == 2
    assert lib.tes_linear_csr_f32(1, 2, 2, None, None, None, None, None, None, 0, 1) == 1
    assert lib.tes_linear_bsr_f32(1, 2, 2, 0, 4, rp.ctypes.data, ci.ctypes.data, v.ctypes.data,
                                  None, x.ctypes.data, y.ctypes.data, 0, 1) == 2


def test_prepared_kernel_matches(sparse_cpu, fresh_rng):
    w = random_sparse(fresh_rng, 50, 70, 0.1)
    bias = fresh_rng.standard_normal(50).astype(np.float32)
    for weight in (formats.to_csr(w), formats.to_bsr(w, (2, 4))):
        k = sparse_cpu.PreparedSparseLinear(weight, bias)
        x = fresh_rng.standard_normal((3, 70)).astype(np.float32)
        out = np.full((3, 50), np.nan, np.float32)
        np.testing.assert_allclose(k(x, out), sparse_cpu.sparse_linear(x, weight, bias), rtol=1e-6,
                                   atol=1e-6)
        with pytest.raises(InvalidInputError):
            k(x.astype(np.float64), out)


def test_missing_library_raises_with_fix(monkeypatch, tmp_path):
    from trt_edge.sparse import cpu
    monkeypatch.setenv("TRT_EDGE_SPARSE_LIB", str(tmp_path / "nope.so"))
    assert not cpu.is_available()
    with pytest.raises(MissingDependencyError, match="python -m trt_edge.sparse.build"):
        cpu.sparse_linear(np.ones((1, 2), np.float32), formats.to_csr(np.eye(2, dtype=np.float32)))
