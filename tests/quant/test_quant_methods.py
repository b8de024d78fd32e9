"""Calibration maths on synthetic distributions whose answer is known."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from trt_edge.errors import InvalidInputError
from trt_edge.quant.methods import (AbsHistogram, compute_amax, entropy_amax, entropy_kl_curve,
                                    fake_quantize, max_amax, mse_amax, per_channel_amax,
                                    percentile_amax, quantize_symmetric, symmetric_scale)


def _hist(x: np.ndarray, num_bins: int = 2048, chunks: int = 1) -> AbsHistogram:
    h = AbsHistogram(num_bins)
    for part in np.array_split(np.asarray(x, np.float32), chunks):
        h.update(part)
    return h


def _nvidia_reference_kl(counts: np.ndarray, nq: int = 128) -> np.ndarray:
    """Loop transcription of the published EntropyCalibration2 search (NVIDIA pytorch-quantization
    calib/histogram.py): zero bin suppressed, digitize levels, Q spread over non-empty bins."""
    bins = counts.astype(np.float64).copy()
    bins[0] = bins[1]
    out = []
    for i in range(nq, len(bins) + 1):
        level = np.digitize(np.arange(i), np.linspace(0, i, nq + 1)) - 1
        level[bins[:i] == 0] = -1
        dens = np.zeros(nq)
        for k, lv in enumerate(level):
            if lv != -1:
                dens[lv] += bins[k]
        for key, n in Counter(level).items():
            if key != -1:
                dens[key] /= n
        q = np.array([dens[lv] if lv != -1 else 0.0 for lv in level])
        p = bins[:i].copy()
        p[-1] += bins[i:].sum()
        p, q = p / p.sum(), q / q.sum()
        nz = p > 0
        out.append(np.inf if np.any(q[nz] == 0) else float(np.sum(p[nz] * np.log(p[nz] / q[nz]))))
    return np.array(out)


@pytest.mark.parametrize("dist", ["gauss", "relu", "laplace_outlier"])
def test_vectorised_entropy_equals_loop_reference(rng, dist):
    x = rng.standard_normal(60_000)
    if dist == "relu":
        x = np.maximum(x, 0)
    elif dist == "laplace_outlier":
        x = np.concatenate([rng.laplace(size=60_000), [25.0, -30.0]])
    h = _hist(x, num_bins=512)
    cand, kl = entropy_kl_curve(h.counts)
    ref = _nvidia_reference_kl(h.counts)
    assert cand[0] == 128 and cand[-1] == h.counts.size
    finite = np.isfinite(ref)
    assert np.array_equal(np.isfinite(kl), finite)
    np.testing.assert_allclose(kl[finite], ref[finite], rtol=1e-9, atol=1e-12)
    # same argmin (ties -> the largest threshold, as the reference does)
    assert cand[kl.size - 1 - np.argmin(kl[::-1])] == 128 + (ref.size - 1 - np.argmin(ref[::-1]))


def test_entropy_matches_onnxruntime_where_definitions_coincide(rng):
    """ORT's HistogramCalibrater entropy (a different variant: symmetric histogram, integer Q,
    smoothing, Q spread into empty bins) agrees with ours within 1% on dense distributions."""
    calibrate = pytest.importorskip("onnxruntime.quantization.calibrate")
    for x in (rng.uniform(-1.0, 1.0, 1_000_000), rng.uniform(-3.0, 3.0, 500_000)):
        h = _hist(x)
        n = h.counts.size
        mirrored = np.concatenate([h.counts[::-1], h.counts])
        edges = (np.arange(-n, n + 1) * h.bin_width).astype(np.float32)
        col = calibrate.HistogramCollector("entropy", True, 2 * n, 256, 99.99, "same")
        ort_amax = float(col.get_entropy_threshold(
            (mirrored, edges, np.float32(-h.amax), np.float32(h.amax)), 256)[1])
        ours = entropy_amax(h)
        assert abs(ours - ort_amax) / ort_amax < 0.01, (ours, ort_amax)


def test_entropy_clips_outliers_but_not_the_body(rng):
    x = np.concatenate([rng.standard_normal(400_000), rng.uniform(-40, 40, 40)])
    h = _hist(x, chunks=9)
    amax = entropy_amax(h)
    assert h.amax > 35
    assert 3.0 < amax < 8.0  # clips the 0.01% far outliers, keeps >= 3 sigma


@pytest.mark.parametrize("native_on", ["1", "0"])
def test_entropy_exact_ties_go_to_the_largest_threshold(monkeypatch, native_on):
    """Two spikes (|x| = 0.42 and 2.8): several thresholds reproduce P exactly (KL 0 in exact maths,
    +-1e-15 in float, differently per summation order). Such ties go to the largest threshold, on
    the native and the NumPy path alike (it once picked 0.42 natively: clipping a fifth of the data)."""
    monkeypatch.setenv("TRT_EDGE_CALIB_NATIVE", native_on)
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(100_000, 300_000))
        x = np.full(n, -0.42, np.float32)
        x[rng.random(n) < 0.2] = 2.8
        h = AbsHistogram(2048)
        h.update(x)
        for levels in (100, 128):
            assert entropy_amax(h, levels) == pytest.approx(h.amax, rel=1e-6)


def test_max_and_percentile_known_answers(rng):
    x = rng.uniform(-2.0, 2.0, 400_000).astype(np.float32)
    h = _hist(x, chunks=5)
    assert max_amax(h) == pytest.approx(float(np.abs(x).max()), rel=0, abs=0)
    # |x| ~ U(0, 2): the 90th percentile is 1.8 (one bin of slack)
    assert percentile_amax(h, 90.0) == pytest.approx(1.8, abs=2 * h.bin_width + 0.01)
    assert percentile_amax(h, 100.0) == pytest.approx(h.amax)
    with pytest.raises(InvalidInputError):
        percentile_amax(h, 0.0)


def test_mse_matches_brute_force_fake_quantization(rng):
    x = rng.laplace(scale=1.0, size=200_000).astype(np.float32)
    h = _hist(x, chunks=3)
    ours = mse_amax(h)
    grid = np.linspace(2.0, float(np.abs(x).max()), 300)
    errs = [float(np.mean((fake_quantize(x, t) - x) ** 2)) for t in grid]
    brute = grid[int(np.argmin(errs))]
    assert abs(ours - brute) / brute < 0.05, (ours, brute)
    # ACIQ (Banner et al. 2019): 8-bit Laplace(b) optimum ~ 9.89 b
    assert 8.5 < ours < 11.5


def test_streaming_histogram_memory_is_bounded_and_counts_exact(rng):
    h = AbsHistogram(2048)
    total = 0
    for k in range(60):  # the range grows by 4 orders of magnitude
        batch = rng.standard_normal(5_000).astype(np.float32) * (1.17 ** k)
        h.update(batch)
        total += batch.size
        assert 2048 <= h.counts.size < 2 * 2048
    assert int(h.counts.sum()) == total == h.total
    assert h.amax * (1 - 1e-7) <= h.counts.size * h.bin_width
    assert h.counts[-1] > 0 or h.counts[-2] > 0  # the last bins hold the max


def test_histogram_ignores_nonfinite_and_handles_all_zero():
    h = AbsHistogram(256)
    h.update(np.zeros(100, np.float32))
    h.update(np.array([np.nan, np.inf, 1.0, -0.5], np.float32))
    assert h.nonfinite == 2 and h.total == 102 and h.amax == 1.0
    assert h.counts[0] >= 100


def test_compute_amax_rejects_unknown_method():
    with pytest.raises(InvalidInputError, match="entropy"):
        compute_amax(_hist(np.ones(10)), "kl")


def test_per_channel_scales_and_onnx_quantize_semantics(rng):
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * np.arange(1, 7, dtype=np.float32)[:, None, None, None]
    w[2] = 0.0  # an all-zero channel still gets a positive scale
    amax = per_channel_amax(w, 0)
    np.testing.assert_allclose(amax[[0, 1, 3]], np.abs(w[[0, 1, 3]]).reshape(3, -1).max(1))
    assert amax[2] > 0
    scale = symmetric_scale(amax)
    ours = quantize_symmetric(w, scale, axis=0)
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=0)
    graph = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, w.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, w.shape)],
                              [helper.make_tensor("s", TensorProto.FLOAT, [6], scale),
                               helper.make_tensor("z", TensorProto.INT8, [6], np.zeros(6, np.int8))])
    ref = ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])).run(None, {"x": w})[0]
    np.testing.assert_array_equal(ours, ref)
    assert np.abs(ours).max() == 127
