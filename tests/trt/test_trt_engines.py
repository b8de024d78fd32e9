"""tensorrt tier: real engines. MNIST and MobileNetV2 in FP32/FP16/INT8, compared with ONNX Runtime.

Skipped where TensorRT is not installed. Run everything with ONE command on a
Jetson or GPU workstation::

    make test-tensorrt          # = pytest -q -m tensorrt tests

Tolerances per precision: FP32 engines are built without TF32 and compared to
ORT at FP32_EXPORT (different kernels, same maths); FP16 at the FP16 tolerance
plus top-1 agreement; INT8 by accuracy / top-1 agreement and SQNR on real data.
"""
from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest

from trt_edge.build import BuildOptions, parse_profiles, read_engine_metadata
from trt_edge.numerics import FP16, FP32_EXPORT, compare_outputs
from trt_edge.runtime.onnxrt import run_onnx

pytestmark = pytest.mark.tensorrt

MNIST_SHAPES = ["input:1x1x28x28/16x1x28x28/64x1x28x28"]
MOBILENET_SHAPES = ["input:1x3x224x224/4x3x224x224/8x3x224x224"]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


def _build(onnx_path, out, precision, shapes, **kw):
    from trt_edge.build.builder import build_engine

    opts = BuildOptions(precision=precision, profiles=parse_profiles(shapes),
                        timing_cache=out.parent / "timing.cache", allow_tf32=precision != "fp32", **kw)
    return build_engine(onnx_path, out, opts)


def _run_trt(plan, x, **opts):
    from trt_edge.runtime.tensorrt import TensorRTRunner, TrtRunnerOptions

    with TensorRTRunner(plan, TrtRunnerOptions(**opts)) as r:
        return r.infer({"input": x})["logits"]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_mnist_engine_matches_onnxruntime(precision, mnist_onnx, mnist_split, engines):
    calib = engines / "mnist_calib.npz"
    np.savez(calib, input=mnist_split.x_train[:256])
    plan = engines / f"mnist.{precision}.plan"
    res = _build(mnist_onnx, plan, precision, MNIST_SHAPES,
                 calib_data=calib if precision == "int8" else None)
    meta = read_engine_metadata(plan)
    assert meta.precision == precision and meta.gpu is not None and res.metadata_path.exists()
    x, y = mnist_split.x_test[:64], mnist_split.y_test[:64]
    ref = run_onnx(str(mnist_onnx), {"input": x})["logits"]
    got = _run_trt(plan, x)
    tol = {"fp32": FP32_EXPORT, "fp16": FP16, "int8": None}[precision]
    rep = compare_outputs({"logits": got}, {"logits": ref}, tol, classifier=True)
    if tol is not None:
        assert rep.passed, rep.table()
    else:
        assert (got.argmax(1) == y).mean() >= (ref.argmax(1) == y).mean() - 0.03, rep.table()
        assert rep.worst().sqnr_db > 15, rep.table()


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_mobilenet_engine_matches_onnxruntime(precision, mobilenet_onnx, imagenet_photos, engines):
    calib = engines / "photos.npz"
    np.savez(calib, input=imagenet_photos)
    plan = engines / f"mobilenet.{precision}.plan"
    _build(mobilenet_onnx, plan, precision, MOBILENET_SHAPES,
           calib_data=calib if precision == "int8" else None, workspace=2 << 30)
    x = imagenet_photos[:8]
    ref = run_onnx(str(mobilenet_onnx), {"input": x})["logits"]
    got = _run_trt(plan, x)
    rep = compare_outputs({"logits": got}, {"logits": ref}, None, classifier=True)
    min_top1 = {"fp32": 1.0, "fp16": 1.0, "int8": 0.75}[precision]
    min_sqnr = {"fp32": 50.0, "fp16": 25.0, "int8": 10.0}[precision]
    assert rep.worst().top1_agreement >= min_top1 and rep.worst().sqnr_db >= min_sqnr, rep.table()


def test_dynamic_shapes_threads_graphs_and_timing(mnist_onnx, mnist_split, engines):
    from trt_edge.bench.trt_timing import benchmark_gpu
    from trt_edge.errors import InvalidInputError
    from trt_edge.runtime import Model
    from trt_edge.runtime.tensorrt import TensorRTRunner, TrtRunnerOptions

    plan = engines / "mnist.dyn.plan"
    _build(mnist_onnx, plan, "fp32", MNIST_SHAPES)
    x = mnist_split.x_test[:64]
    ref = run_onnx(str(mnist_onnx), {"input": x})["logits"]
    with TensorRTRunner(plan) as r:
        for b in (1, 7, 64):  # set_input_shape only when it changes; buffers planned once
            assert compare_outputs({"l": r.infer({"input": x[:b]})["logits"]}, {"l": ref[:b]},
                                   FP32_EXPORT).passed
        with pytest.raises(InvalidInputError, match="largest profile"):
            r.infer({"input": np.zeros((65, 1, 28, 28), np.float32)})
        feeds = [{"input": x[i:i + 8]} for i in range(0, 64, 8)]
        outs = r.infer_batch(feeds, num_threads=4)  # 4 callers share the runner's fixed instances
        np.testing.assert_allclose(np.concatenate([o["logits"] for o in outs]), ref, rtol=1e-4, atol=1e-5)
        report = benchmark_gpu(r, {"input": x[:16]}, warmup=5, iterations=50)
        for key in ("h2d_ms", "compute_ms", "d2h_ms", "enqueue_ms", "end_to_end_ms"):
            assert report[key]["median"] > 0
        assert report["throughput_qps"] > 0
        assert set(report["variants"]) == {"cuda_graph_on", "no_transfers"}  # the main run was graph off
        graph = benchmark_gpu(r, {"input": x[:16]}, warmup=5, iterations=50, cuda_graph=True, transfers=False)
        assert graph["cuda_graph"] and "h2d_ms" not in graph and r.options.cuda_graph is False
    with TensorRTRunner(plan, TrtRunnerOptions(cuda_graph=True)) as g:
        a = g.infer({"input": x[:16]})["logits"]
        b = g.infer({"input": x[:16]})["logits"]  # replayed graph
        np.testing.assert_allclose(a, ref[:16], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(a, b)
    with concurrent.futures.ThreadPoolExecutor(2) as pool, TensorRTRunner(plan) as r2:
        futs = [pool.submit(r2.infer, {"input": x[:4]}) for _ in range(4)]
        assert all(np.allclose(f.result()["logits"], ref[:4], rtol=1e-4, atol=1e-5) for f in futs)
    with Model.load(plan, instances=3) as model:  # 3 contexts + streams + buffers, made at load
        assert (model.signature.batch.min, model.signature.batch.max) == (1, 64)
        feeds = [{"input": x[i:i + 1 + i % 8]} for i in range(48)]
        for i, res in enumerate(model.infer_batch(feeds)):
            np.testing.assert_allclose(res.outputs["logits"], ref[i:i + 1 + i % 8], rtol=1e-4, atol=1e-5)
        assert model.pool_stats().peak_in_use <= 3


def test_engine_from_another_tensorrt_is_refused_before_deserializing(mnist_onnx, engines):
    import json

    from trt_edge.artifacts import sidecar_path
    from trt_edge.errors import EngineCompatibilityError
    from trt_edge.runtime.tensorrt import TensorRTRunner

    plan = engines / "mnist.compat.plan"
    _build(mnist_onnx, plan, "fp32", MNIST_SHAPES)
    side = sidecar_path(plan)
    meta = json.loads(side.read_text())
    meta["engine"]["tensorrt_version"] = "9.0.0"
    side.write_text(json.dumps(meta))
    with pytest.raises(EngineCompatibilityError, match="TensorRT 9.0.0"):
        TensorRTRunner(plan).activate()


def test_timing_cache_is_written_with_its_key(mnist_onnx, engines):
    _build(mnist_onnx, engines / "mnist.tc.plan", "fp16", MNIST_SHAPES)
    assert (engines / "timing.cache").stat().st_size > 0
    assert (engines / "timing.cache.key.json").exists()


def test_compare_cli_between_tensorrt_and_onnxruntime(mnist_onnx, engines):
    from trt_edge.cli import main

    plan = engines / "mnist.fp32.plan"
    if not plan.exists():
        _build(mnist_onnx, plan, "fp32", MNIST_SHAPES)
    # exit 1 if any output is outside the FP32 export tolerance
    assert main(["compare", str(mnist_onnx), str(plan), "--shapes", "input:8x1x28x28", "--tolerance", "export"]) == 0
