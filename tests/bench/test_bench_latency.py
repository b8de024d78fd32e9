"""trt_edge.bench.latency and `trt-edge bench`: JSON fields, statistics, time budget, threads."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from trt_edge.artifacts import sha256_file
from trt_edge.bench import BenchmarkOptions, InputOptions, LatencyStats, benchmark, latency_histogram
from trt_edge.cli import main
from trt_edge.errors import InvalidInputError
from trt_edge.runtime import OnnxRuntimeRunner, OrtOptions

STAT_KEYS = {"min", "mean", "median", "p90", "p95", "p99", "max", "std"}


def test_stats_match_numpy_linear_percentiles():
    samples = np.arange(1, 101, dtype=np.float64)  # 1..100 ms
    s = LatencyStats.from_samples(samples)
    assert (s.min, s.max, s.mean, s.median) == (1.0, 100.0, 50.5, 50.5)
    assert s.p90 == pytest.approx(90.1) and s.p95 == pytest.approx(95.05) and s.p99 == pytest.approx(99.01)
    with pytest.raises(InvalidInputError):
        LatencyStats.from_samples([])


def test_benchmark_json_fields(mnist_onnx, tmp_path):
    opts = BenchmarkOptions(warmup=3, iterations=25, inputs=InputOptions(batch=4), show_progress=False)
    result = benchmark(mnist_onnx, opts, ort_options=OrtOptions(intra_op_threads=1))
    path = result.save_json(tmp_path / "bench.json")
    d = json.loads(path.read_text())
    assert d["iterations"] == 25 and len(d["latencies_ms"]) == 25 and d["warmup"] == 3
    lat = d["latency_ms"]
    assert set(lat) == STAT_KEYS
    assert lat["min"] <= lat["median"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert lat["min"] > 0
    assert lat["median"] == pytest.approx(float(np.median(d["latencies_ms"])))
    # Throughput is calls over wall time, which includes every timed call.
    assert d["throughput_per_s"] == pytest.approx(25 / d["total_time_s"])
    assert d["total_time_s"] * 1e3 >= sum(d["latencies_ms"]) * 0.999
    assert d["samples_per_s"] == pytest.approx(4 * d["throughput_per_s"])
    assert d["batch_size"] == 4 and d["input_shapes"] == {"input": [4, 1, 28, 28]}
    assert d["input_dtypes"] == {"input": "float32"}
    assert d["backend"] == "onnxruntime"
    assert d["runner"]["providers"] == ["CPUExecutionProvider"] and d["runner"]["intra_op_threads"] == 1
    assert d["artifact_sha256"] == sha256_file(mnist_onnx)
    assert d["artifact"] == str(mnist_onnx)
    assert d["machine"]["cpu_count"] >= 1 and "onnxruntime" in d["tool_versions"]
    assert d["gpu"] is None
    assert d["options"]["iterations"] == 25 and d["options"]["inputs"]["batch"] == 4
    assert "onnxruntime" in result.table()


def test_time_budget_and_threads(mnist_onnx):
    opts = BenchmarkOptions(warmup=1, iterations=None, duration_s=0.4, show_progress=False)
    t0 = time.perf_counter()
    result = benchmark(mnist_onnx, opts)
    assert 0.4 <= result.total_time_s <= time.perf_counter() - t0
    assert result.iterations >= opts.min_iterations and len(result.latencies_ms) == result.iterations

    threaded = benchmark(mnist_onnx, BenchmarkOptions(warmup=2, iterations=30, threads=3, show_progress=False),
                         ort_options=OrtOptions(intra_op_threads=1))
    assert threaded.iterations == 30 and threaded.threads == 3
    # Both limits: the first one reached stops the run.
    both = benchmark(mnist_onnx, BenchmarkOptions(warmup=0, iterations=7, duration_s=30, show_progress=False))
    assert both.iterations == 7 and both.total_time_s < 30


def test_benchmark_uses_given_inputs_and_keeps_an_active_runner(mnist_onnx, mnist_split):
    x = mnist_split.x_test[:3]
    with OnnxRuntimeRunner(mnist_onnx) as r:
        result = benchmark(r, BenchmarkOptions(warmup=0, iterations=3, inputs=InputOptions(inputs={"x": x}),
                                               keep_samples=False, show_progress=False))
        assert r.is_active  # not closed behind the caller's back
    assert result.input_shapes == {"input": [3, 1, 28, 28]} and result.latencies_ms is None
    assert result.artifact_sha256 == sha256_file(mnist_onnx)


class GpuTimingDouble(OnnxRuntimeRunner):
    """TEST DOUBLE: stands in for the TensorRT runner's ``benchmark_gpu`` hook only, to check that
    bench calls it with the validated feed and stores its dict; real GPU timing is tested in tests/trt."""

    calls: list = []

    def benchmark_gpu(self, feed, warmup, iterations, duration_s):
        self.calls.append((sorted(feed), warmup, iterations, duration_s))
        return {"h2d_ms": {"median": 0.5, "p90": 0.6, "p99": 0.7}, "compute_ms": {"median": 1.0},
                "cuda_graph": False}


def test_gpu_breakdown_hook(mnist_onnx):
    runner = GpuTimingDouble(mnist_onnx)
    result = benchmark(runner, BenchmarkOptions(warmup=2, iterations=4, show_progress=False))
    assert GpuTimingDouble.calls == [(["input"], 2, 4, None)]
    assert result.gpu["h2d_ms"]["median"] == 0.5 and result.gpu["cuda_graph"] is False
    assert "gpu h2d_ms" in result.table()
    none = benchmark(GpuTimingDouble(mnist_onnx), BenchmarkOptions(iterations=2, gpu_timing=False,
                                                                   show_progress=False))
    assert none.gpu is None


@pytest.mark.parametrize("kwargs, message", [
    ({"iterations": None}, "iterations or duration_s"),
    ({"iterations": 0}, "iterations"),
    ({"duration_s": 0.0}, "duration_s"),
    ({"warmup": -1}, "warmup"),
    ({"threads": 0}, "threads"),
])
def test_options_validation(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        BenchmarkOptions(**kwargs)


def test_fixed_batch_conflict(tmp_path, rng):
    from bench_tiny_models import linear_model
    model = linear_model(rng.standard_normal((3, 2)), rng.standard_normal(2), batch=2)
    with pytest.raises(InvalidInputError, match="fixed batch of 2"):
        benchmark(model, BenchmarkOptions(iterations=1, inputs=InputOptions(batch=8), show_progress=False))


def test_histogram_png(tmp_path):
    samples = np.random.default_rng(0).gamma(4.0, 0.5, 200)
    png = latency_histogram(list(samples), tmp_path / "lat.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    tail = np.concatenate([samples, [100.0, 250.0]])  # preempted calls: log-spaced bins
    assert latency_histogram(tail, tmp_path / "tail.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InvalidInputError):
        latency_histogram([], tmp_path / "empty.png")


def test_cli_bench_json_and_plot(mnist_onnx, tmp_path, capsys):
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    rc = main(["bench", str(mnist_onnx), "--iterations", "15", "--warmup", "2", "--batch", "2",
               "--intra-op-threads", "1", "--io-binding", "--json", str(out), "--plot", str(png), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "backend      onnxruntime" in printed and "p99" in printed
    d = json.loads(out.read_text())
    assert d["iterations"] == 15 and d["runner"]["io_binding"] is True and d["batch_size"] == 2
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_bench_user_errors_exit_2(mnist_onnx, tmp_path):
    assert main(["bench", str(tmp_path / "missing.onnx")]) == 2
    assert main(["bench", str(mnist_onnx), "--shapes", "input:1x3x28x28", "--no-progress"]) == 2
    assert main(["bench", str(mnist_onnx), "--dim", "batch", "--no-progress"]) == 2
