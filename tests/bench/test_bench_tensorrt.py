"""tensorrt tier: bench and compare on a real TensorRT engine (skipped where TensorRT is missing).

Run with `pytest -m tensorrt tests` on a GPU machine with TensorRT (see docs/tensorrt.md).
"""
from __future__ import annotations

import json

import pytest

from trt_edge.bench import BenchmarkOptions, CompareOptions, InputOptions, benchmark, compare
from trt_edge.cli import main

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]


@pytest.fixture(scope="module")
def mnist_plan(mnist_onnx, tmp_path_factory):
    from trt_edge.build import build
    from trt_edge.build.options import BuildOptions
    from trt_edge.build.profiles import parse_profile
    out = tmp_path_factory.mktemp("engines") / "mnist_fp32.plan"
    res = build(mnist_onnx, out, BuildOptions(
        precision="fp32", profiles=[parse_profile("input:1x1x28x28/8x1x28x28/32x1x28x28")]), allow_fallback=False)
    return res.engine_path


def test_bench_engine_reports_gpu_breakdown(mnist_plan, tmp_path):
    result = benchmark(mnist_plan, BenchmarkOptions(warmup=5, iterations=50, inputs=InputOptions(batch=8),
                                                    show_progress=False))
    assert result.backend == "tensorrt"
    for key in ("compute_ms", "enqueue_ms", "h2d_ms", "d2h_ms"):
        assert result.gpu[key]["median"] > 0
    assert result.gpu["compute_ms"]["median"] <= result.latency_ms.p99
    out = tmp_path / "trt.json"
    assert main(["bench", str(mnist_plan), "--iterations", "20", "--batch", "4", "--json", str(out),
                 "--no-progress"]) == 0
    assert json.loads(out.read_text())["gpu"]["compute_ms"]["median"] > 0


def test_compare_engine_with_onnxruntime(mnist_onnx, mnist_plan, mnist_split):
    x = mnist_split.x_test[:32]
    res = compare(mnist_onnx, mnist_plan, CompareOptions(inputs=InputOptions(inputs={"input": x})))
    o = res.report.outputs[0]
    # FP32 engines may use TF32 kernels (TensorRT's default on Ampere+): ~1e-3 relative error,
    # so the check is SQNR and top-1 agreement, not an element-wise FP32 tolerance.
    assert o.sqnr_db > 40 and o.top1_agreement >= 0.97
