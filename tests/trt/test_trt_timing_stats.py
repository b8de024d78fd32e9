"""trtexec-style statistics and the timing loop (pure; the GPU events are in the gpu tier)."""
from __future__ import annotations

import numpy as np
import pytest

from trt_edge.bench.trt_timing import (GpuTimingOptions, IterationTiming, format_report, latency_stats,
                                       run_timing_loop, summarize)
from trt_edge.errors import InvalidInputError


def test_latency_stats_match_numpy():
    rng = np.random.default_rng()
    x = rng.gamma(2.0, 0.5, size=1001)
    s = latency_stats(x.tolist())
    assert s["median"] == pytest.approx(np.median(x)) and s["p99"] == pytest.approx(np.percentile(x, 99))
    assert s["min"] == x.min() and s["max"] == x.max() and s["count"] == 1001
    assert s["min"] <= s["median"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["max"]
    with pytest.raises(InvalidInputError):
        latency_stats([])
    with pytest.raises(InvalidInputError, match="NaN"):
        latency_stats([1.0, float("nan")])


def test_summarize_end_to_end_is_the_sum_and_throughput_uses_wall_time():
    ts = [IterationTiming(0.1 * i, 1.0 + i, 0.2, 0.05) for i in range(1, 11)]
    r = summarize(ts, wall_s=0.5, batch=4, options=GpuTimingOptions(transfers=True))
    e2e = [t.h2d_ms + t.compute_ms + t.d2h_ms for t in ts]
    assert r["end_to_end_ms"]["mean"] == pytest.approx(np.mean(e2e))
    assert r["throughput_qps"] == pytest.approx(20.0) and r["throughput_samples_per_s"] == pytest.approx(80.0)
    assert "h2d_ms" in r and not r["enqueue_bound"]
    r2 = summarize(ts, 0.5, 4, GpuTimingOptions(transfers=False))
    assert "h2d_ms" not in r2 and "d2h_ms" not in r2
    text = format_report(r)
    assert "GPU Compute Time" in text and "percentile(99%)" in text and "Throughput: 20.00 qps" in text


def test_timing_loop_warmup_then_budget():
    seen: list[bool] = []

    def step(timed: bool) -> IterationTiming:
        seen.append(timed)
        return IterationTiming(0.0, 1.0, 0.0, 2.0)  # enqueue slower than compute

    r = run_timing_loop(step, GpuTimingOptions(warmup=3, iterations=12, min_iterations=5))
    assert seen[:3] == [False] * 3 and seen[3:] == [True] * 12 and r["iterations"] == 12
    assert r["enqueue_bound"] and "CUDA graphs" in format_report(r)
    seen.clear()
    r = run_timing_loop(step, GpuTimingOptions(warmup=0, iterations=None, duration_s=0.0, min_iterations=7))
    assert r["iterations"] == 7  # the minimum is always timed
    with pytest.raises(InvalidInputError):
        GpuTimingOptions(iterations=None, duration_s=None)
