"""LiteRT as a peer backend: open_runner("x.tflite"), bench/compare through the Runner interface."""
from __future__ import annotations

import numpy as np
import pytest

from trt_edge.errors import InvalidInputError, RunnerError
from trt_edge.runtime.factory import open_runner
from trt_edge.runtime.litert import LiteRTOptions, LiteRTRunner
from trt_edge.tflite import import_tflite
from trt_edge.tflite.verify import litert_interpreter, run_litert


def test_open_runner_gives_litert_and_matches_the_interpreter(mp_models):
    path = mp_models["iris_landmark"]
    runner = open_runner(path)
    assert isinstance(runner, LiteRTRunner) and runner.backend == "litert" and not runner.thread_safe
    x = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    with runner:
        spec = runner.input_specs()[0]
        assert spec.name == "input_1" and spec.shape == (1, 64, 64, 3) and spec.dtype == np.float32
        out = runner.infer({"input_1": x})
        out2 = runner.infer({"input_1": x})
        with pytest.raises(InvalidInputError, match="dtype float64"):
            runner.infer({"input_1": x.astype(np.float64)})
        with pytest.raises(InvalidInputError, match="size 32 on axis 1"):
            runner.infer({"input_1": x[:, :32]})
    runner.deactivate()  # safe twice
    ref = run_litert(litert_interpreter(path), {"input_1": x})
    assert sorted(out) == sorted(ref)
    for k in ref:
        np.testing.assert_array_equal(out[k], ref[k])
        assert out[k] is not out2[k]  # the caller owns each result


def test_threads_and_builtin_kernels(mp_models):
    path = mp_models["palm_detection_lite"]
    x = {"input_1": np.random.default_rng(1).random((1, 192, 192, 3), dtype=np.float32)}
    with LiteRTRunner(path, LiteRTOptions(num_threads=2)) as two, LiteRTRunner(path, LiteRTOptions(xnnpack=False)) as ref:
        assert two.describe()["num_threads"] == 2
        a, b = two.infer(x), ref.infer(x)
    for k in a:
        assert np.max(np.abs(a[k] - b[k])) <= 1e-4 * np.max(np.abs(b[k]))
    with pytest.raises(RunnerError, match="Convolution2DTransposeBias"):
        LiteRTRunner(mp_models["selfie_segmentation"], LiteRTOptions(xnnpack=False)).activate()
    with pytest.raises(InvalidInputError, match="num_threads"):
        LiteRTOptions(num_threads=0)


def test_tflite_needs_import_for_other_backends(mp_models):
    with pytest.raises(InvalidInputError, match="trt-edge import"):
        open_runner(mp_models["iris_landmark"], backend="onnxruntime")


def test_compare_tflite_against_its_import(mp_models, tmp_path):
    from trt_edge.bench.compare import compare
    onnx_path = tmp_path / "iris.onnx"
    import_tflite(mp_models["iris_landmark"], onnx_path)
    result = compare(mp_models["iris_landmark"], onnx_path)
    assert result.reference["backend"] == "litert" and result.candidate["backend"] == "onnxruntime"
    assert result.output_map == {n: n for n in ("output_eyes_contours_and_brows", "output_iris")}
    assert all(out.sqnr_db > 80 for out in result.report.outputs)


def test_model_pool_serves_a_tflite_with_one_interpreter_per_instance(mp_models):
    from trt_edge.runtime import Model
    x = {"input_1": np.random.default_rng(2).random((1, 64, 64, 3), dtype=np.float32)}
    model = Model.load(mp_models["iris_landmark"], instances=2)
    try:
        desc = model.describe()
        assert desc.backend.backend == "litert" and desc.instances == 2
        got = model.infer(x).outputs
    finally:
        model.close()
    ref = run_litert(litert_interpreter(mp_models["iris_landmark"]), x)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
