"""The native calibration kernels (csrc/calib) give the NumPy path's counts exactly and its range
searches' thresholds."""
from __future__ import annotations

import ctypes
import shutil

import numpy as np
import pytest

from trt_edge.quant import native
from trt_edge.quant.methods import AbsHistogram, HistogramScratch


@pytest.fixture(scope="module")
def kernel():
    if not native.available():
        if shutil.which("c++") or shutil.which("g++"):
            pytest.fail("The calibration kernel is not built although a C++ compiler is present: "
                        "`pip install -e .` builds it, or run `python -m trt_edge.quant.native`.")
        pytest.skip("no C++ compiler: calibration uses the NumPy path")
    return native


@pytest.fixture
def fresh_rng() -> np.random.Generator:
    seed = int(np.random.SeedSequence().entropy % (2**32))  # fresh inputs every run (TESTING.md)
    print(f"native histogram test seed: {seed}")
    return np.random.default_rng(seed)


def _numpy_counts(flat: np.ndarray, inv: np.float32, nb: int, monkeypatch) -> np.ndarray:
    counts = np.zeros(nb, np.int64)
    with monkeypatch.context() as m:
        m.setenv("TRT_EDGE_CALIB_NATIVE", "0")
        HistogramScratch().add_abs(flat, inv, counts)
    return counts


def _cases(rng: np.random.Generator):
    n = int(rng.integers(100_000, 300_000))
    yield "normal", rng.standard_normal(n).astype(np.float32)
    yield "relu", np.maximum(rng.standard_normal(n), 0).astype(np.float32)
    spiky = np.full(n, -0.42, np.float32)
    spiky[rng.random(n) < 0.2] = 2.8
    yield "spiky", spiky
    yield "tiny", rng.standard_normal(int(rng.integers(1, 9))).astype(np.float32)
    yield "empty", np.zeros(0, np.float32)
    yield "heavy tail", (rng.standard_cauchy(n) * 0.1).astype(np.float32)


@pytest.mark.parametrize("nb", [2048, 3001])
def test_kernel_counts_equal_numpy(kernel, fresh_rng, monkeypatch, nb):
    for name, x in _cases(fresh_rng):
        amax = float(np.abs(x).max()) if x.size else 1.0
        inv = np.float32(nb / amax)
        # edges: values exactly on bin boundaries and the max itself (the last bin)
        x = np.concatenate([x, (np.arange(0, nb, 97, dtype=np.float32) / inv).astype(np.float32),
                            np.float32([amax, -amax])])
        expected = _numpy_counts(x, inv, nb, monkeypatch)
        got = np.zeros(nb, np.int64)
        assert kernel.abs_histogram_f32(x, inv, got), name
        np.testing.assert_array_equal(got, expected, err_msg=name)
        assert got.sum() == x.size


def test_whole_histogram_stream_is_identical(kernel, fresh_rng, monkeypatch):
    """Growing ranges, bin merges and NaN/inf filtering: the same histogram either way."""
    batches = [fresh_rng.standard_normal((8, 1000)).astype(np.float32) * s for s in (0.1, 1.0, 5.0, 0.5, 40.0)]
    batches[2][0, :3] = [np.nan, np.inf, -np.inf]
    a, b = AbsHistogram(2048), AbsHistogram(2048)
    for x in batches:
        a.update(x)
    with monkeypatch.context() as m:
        m.setenv("TRT_EDGE_CALIB_NATIVE", "0")
        for x in batches:
            b.update(x)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert (a.bin_width, a.amax, a.total, a.nonfinite) == (b.bin_width, b.amax, b.total, b.nonfinite)


def test_kernel_rejects_bad_arguments_and_non_contiguous_falls_back(kernel, fresh_rng):
    x = fresh_rng.standard_normal(64).astype(np.float32)
    lib = kernel.library()
    counts = np.zeros(16, np.int64)
    assert lib.tec_abs_histogram_f32(x.ctypes.data, x.size, ctypes.c_float(1.0), counts.ctypes.data, 0) == 1
    assert lib.tec_abs_histogram_f32(x.ctypes.data, x.size, ctypes.c_float(float("nan")), counts.ctypes.data, 16) == 1
    assert not counts.any()  # nothing written on a rejected call
    assert not kernel.abs_histogram_f32(x[::2], np.float32(1.0), counts)  # strided: the NumPy path takes it
    assert not kernel.abs_histogram_f32(x.astype(np.float64), np.float32(1.0), counts)


def test_abs_max_and_channel_sums_in_one_read(kernel, fresh_rng):
    """max |x| exactly, channel sums to float64 accuracy; a NaN/inf batch is refused (None) and
    leaves the sums untouched, so the caller's NumPy path handles it."""
    for shape, axis in (((2, 5, 7, 9), 1), ((3, 17), 1), ((4, 6, 11), 2), ((4, 6, 11), 0), ((1, 96, 56, 56), 1)):
        x = (fresh_rng.standard_normal(shape) * fresh_rng.uniform(0.01, 100)).astype(np.float32)
        sums = np.zeros(shape[axis])
        assert kernel.abs_max_channel_sums_f32(x, axis, sums) == float(np.abs(x).max())
        others = tuple(i for i in range(x.ndim) if i != axis)
        np.testing.assert_allclose(sums, np.sum(x, axis=others, dtype=np.float64), rtol=1e-12,
                                   atol=1e-12 * float(np.abs(x).sum()))
        assert kernel.abs_max_channel_sums_f32(x) == float(np.abs(x).max())  # max only
    x = fresh_rng.standard_normal((2, 3, 4)).astype(np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[1, 2, 3] = bad
        sums = np.ones(3)
        assert kernel.abs_max_channel_sums_f32(y, 1, sums) is None
        np.testing.assert_array_equal(sums, 1.0)
        assert kernel.abs_max_channel_sums_f32(y) is None
    big = np.full(8, 3e38, np.float32)  # finite values whose float32 sum would overflow: still finite here
    assert kernel.abs_max_channel_sums_f32(big, 0, np.zeros(8)) == pytest.approx(3e38, rel=1e-7)
    assert kernel.abs_max_channel_sums_f32(x[:, ::2]) is None  # strided: the NumPy path takes it
    assert kernel.abs_max_channel_sums_f32(x, 1, np.zeros(4)) is None  # wrong sums length


def test_collection_fold_is_the_same_with_and_without_the_kernel(kernel, fresh_rng, monkeypatch):
    """The collection pass's per-batch fold (histograms, maxes, channel means): native = NumPy."""
    from trt_edge.quant.collect import _HistogramWorker
    names = ["conv_in", "act", "flat"]
    batches = [[fresh_rng.standard_normal((2, 8, 6, 6)).astype(np.float32) * s,
                # large enough for the native max-only read (_NATIVE_MAX_MIN_VALUES)
                np.maximum(fresh_rng.standard_normal((2, 64, 2048)), 0).astype(np.float32) * s,
                fresh_rng.standard_normal((2, 12)).astype(np.float32)] for s in (0.5, 3.0, 1.0)]
    batches[1][1][0, 0, 0] = np.nan

    def fold(histograms: bool, native_on: bool):
        with monkeypatch.context() as m:
            m.setenv("TRT_EDGE_CALIB_NATIVE", "1" if native_on else "0")
            hists = {n: AbsHistogram(2048) for n in names}
            maxes = {n: 0.0 for n in names}
            w = _HistogramWorker(hists, maxes, histograms, threaded=False, channel_axes={"conv_in": 1, "flat": 1})
            for outs in batches:
                w._fold(names, outs)
            return hists, maxes, w

    for histograms in (True, False):
        (ha, ma, wa), (hb, mb, wb) = fold(histograms, True), fold(histograms, False)
        for n in names:
            np.testing.assert_array_equal(ha[n].counts, hb[n].counts)
            assert (ha[n].amax, ha[n].total, ha[n].nonfinite) == (hb[n].amax, hb[n].total, hb[n].nonfinite)
        assert ma == mb
        assert wa.rows == wb.rows == {"conv_in": 3 * 2 * 36, "flat": 3 * 2}
        for n in ("conv_in", "flat"):
            np.testing.assert_allclose(wa.sums[n], wb.sums[n], rtol=1e-12, atol=1e-9)


def test_mse_search_is_the_numpy_reference(kernel, fresh_rng, monkeypatch):
    """The native MSE errors match the NumPy loop to the last digits, and the search picks the
    same threshold on every distribution (the kernel only changes the summation order)."""
    from trt_edge.quant.methods import _mse_errors, mse_amax
    for name, x in _cases(fresh_rng):
        if x.size < 100:
            continue
        h = AbsHistogram(2048)
        h.update(x)
        keep = h.counts > 0
        c = ((np.arange(h.counts.size) + 0.5) * h.bin_width)[keep]
        w = h.counts[keep].astype(np.float64)
        cand = np.arange(127, h.counts.size + 1, 7)
        got = _mse_errors(c, w, cand, h.bin_width, h.amax, 127)
        native_amax = mse_amax(h)
        with monkeypatch.context() as m:
            m.setenv("TRT_EDGE_CALIB_NATIVE", "0")
            expected = _mse_errors(c, w, cand, h.bin_width, h.amax, 127)
            assert mse_amax(h) == native_amax, name
        np.testing.assert_allclose(got, expected, rtol=1e-11, atol=0, err_msg=name)
    lib = kernel.library()
    out = np.zeros(1)
    one = np.ones(1)
    p = out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
    q = one.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
    assert lib.tec_mse_errors(q, q, 1, q, 1, 0, p) == 1  # no levels: rejected, nothing written
    assert out[0] == 0.0


@pytest.mark.parametrize("levels", [128, 100])  # a power of two (int8's) takes the shift path
def test_entropy_search_is_the_numpy_reference(kernel, fresh_rng, monkeypatch, levels):
    """The native KL sweep matches the NumPy reference curve (its own log: within 1e-9 relative,
    the same infinities) and picks the same threshold on every distribution."""
    from trt_edge.quant.methods import entropy_amax, entropy_kl_curve
    for name, x in _cases(fresh_rng):
        if x.size < 100:
            continue
        h = AbsHistogram(2048)
        h.update(x)
        cand, kl = entropy_kl_curve(h.counts, levels)
        amax = entropy_amax(h, levels)
        with monkeypatch.context() as m:
            m.setenv("TRT_EDGE_CALIB_NATIVE", "0")
            ref_cand, ref_kl = entropy_kl_curve(h.counts, levels)
            assert entropy_amax(h, levels) == amax, name
        np.testing.assert_array_equal(cand, ref_cand)
        finite = np.isfinite(ref_kl)
        np.testing.assert_array_equal(np.isfinite(kl), finite, err_msg=name)
        np.testing.assert_allclose(kl[finite], ref_kl[finite], rtol=1e-9, atol=1e-12, err_msg=name)
    lib = kernel.library()
    out = np.zeros(1)
    p = out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
    assert lib.tec_entropy_level_terms(p, p, 4, 128, 10, 1, p, p) == 1  # past the histogram: rejected
    assert out[0] == 0.0
