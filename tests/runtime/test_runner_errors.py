"""Runner error cases: names, dtypes, shapes, state, options, backend failures."""
from __future__ import annotations

import numpy as np
import pytest

from trt_edge.errors import InvalidInputError, MissingDependencyError, RunnerError
from trt_edge.runtime import OnnxRuntimeRunner, OrtOptions, open_runner
from trt_edge.runtime.factory import artifact_kind, tensorrt_available

from runtime_tiny_models import bad_reshape_model, linear_model, two_input_model


@pytest.fixture
def runner():
    with OnnxRuntimeRunner(two_input_model(), name="tiny") as r:
        yield r


def good_feed(batch: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.ones((batch, 4), np.float32), "ids": np.arange(batch * 4, dtype=np.int64).reshape(batch, 4)}


def test_good_feed_runs(runner):
    out = runner.infer(good_feed())
    np.testing.assert_array_equal(out["y"], 2.0 + np.arange(8, dtype=np.float32).reshape(2, 4))


@pytest.mark.parametrize("feed, message", [
    ({"x": np.ones((2, 4), np.float32)}, "missing ['ids']"),
    ({**good_feed(), "z": np.ones(1)}, "unknown ['z']"),
    ({"x": np.ones((2, 4), np.float64), "ids": good_feed()["ids"]}, "astype(np.float32)"),
    ({"x": np.ones((2, 4), np.float32), "ids": good_feed()["ids"].astype(np.int32)}, "expects int64"),
    ({"x": np.ones((2, 4, 1), np.float32), "ids": good_feed()["ids"]}, "has 3 dimensions"),
    ({"x": np.ones((2, 5), np.float32), "ids": good_feed()["ids"]}, "size 5 on axis 1"),
    ({"x": np.ones((3, 4), np.float32), "ids": good_feed()["ids"]}, "Dimension 'batch' is 3"),
    ({"x": np.array([[1.0], [1.0, 2.0]], dtype=object), "ids": good_feed()["ids"]}, "object array"),
])
def test_bad_feeds_are_rejected_with_the_fix(runner, feed, message):
    with pytest.raises(InvalidInputError) as err:
        runner.infer(feed)
    assert message in str(err.value)


def test_non_mapping_feed(runner):
    with pytest.raises(InvalidInputError, match="mapping"):
        runner.infer([np.ones((2, 4), np.float32)])  # type: ignore[arg-type]


def test_lists_are_converted_when_dtype_matches(runner):
    # A plain Python list of floats becomes float64: the dtype error says how to fix it.
    with pytest.raises(InvalidInputError, match="float64"):
        runner.infer({"x": [[1.0] * 4], "ids": np.zeros((1, 4), np.int64)})


def test_state_errors():
    r = OnnxRuntimeRunner(two_input_model())
    with pytest.raises(RunnerError, match="not active"):
        r.infer(good_feed())
    with pytest.raises(RunnerError, match="not active"):
        r.input_specs()
    r.activate()
    with pytest.raises(RunnerError, match="already active"):
        r.activate()
    r.deactivate()
    r.deactivate()  # safe twice
    assert not r.is_active
    with r:  # re-activation after deactivate works
        assert r.infer(good_feed())["y"].shape == (2, 4)


def test_batch_and_async_validate_before_running(runner):
    feeds = [good_feed(), {"x": np.ones((2, 4), np.float32)}]
    with pytest.raises(InvalidInputError, match="Feed #1"):
        runner.infer_batch(feeds, num_threads=2)
    with pytest.raises(InvalidInputError, match="num_threads"):
        runner.infer_batch([good_feed()], num_threads=0)
    with pytest.raises(InvalidInputError, match="missing"):
        runner.infer_async({"x": np.ones((2, 4), np.float32)})


def test_backend_failure_is_a_runner_error():
    with OnnxRuntimeRunner(bad_reshape_model()) as r:
        with pytest.raises(RunnerError, match="inference failed"):
            r.infer({"x": np.ones(4, np.float32)})
        with pytest.raises(RunnerError, match="inference failed"):
            r.infer_async({"x": np.ones(4, np.float32)}).result(timeout=30)


def test_model_loading_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        OnnxRuntimeRunner(tmp_path / "missing.onnx").activate()
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    with pytest.raises(RunnerError, match="could not load"):
        OnnxRuntimeRunner(corrupt).activate()


def test_provider_errors_and_fallback(caplog):
    with pytest.raises(RunnerError, match="None of the providers"):
        OnnxRuntimeRunner(two_input_model(), OrtOptions(providers=("NoSuchExecutionProvider",))).activate()
    opts = OrtOptions(providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    with OnnxRuntimeRunner(two_input_model(), opts) as r:
        assert r.describe()["providers"] == ["CPUExecutionProvider"]


@pytest.mark.parametrize("kwargs, message", [
    ({"graph_optimization": "max"}, "graph_optimization"),
    ({"execution_mode": "async"}, "execution_mode"),
    ({"intra_op_threads": -1}, ">= 0"),
    ({"log_severity": 7}, "log_severity"),
    ({"provider_options": [{}, {}]}, "one dict per provider"),
])
def test_ort_options_validation(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        OrtOptions(**kwargs)


def test_ort_options_reach_the_session(tmp_path):
    opts = OrtOptions(intra_op_threads=1, inter_op_threads=2, execution_mode="parallel",
                      graph_optimization="disable", allow_spinning=False,
                      session_config={"session.use_env_allocators": "0"})
    with OnnxRuntimeRunner(two_input_model(), opts) as r:
        so = r.session.get_session_options()
        assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 2
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert r.describe()["execution_mode"] == "parallel"


def test_missing_custom_op_library():
    with pytest.raises(InvalidInputError, match="Custom-op library"):
        OnnxRuntimeRunner(two_input_model(), OrtOptions(custom_op_libraries=("/no/such/lib.so",))).activate()


# ---- open_runner -----------------------------------------------------------------------------

def test_open_runner_picks_the_backend(tmp_path):
    import onnx
    path = tmp_path / "m.onnx"
    onnx.save(two_input_model(), path)
    assert isinstance(open_runner(path), OnnxRuntimeRunner)
    assert isinstance(open_runner(two_input_model()), OnnxRuntimeRunner)
    # auto + prefer_tensorrt falls back to ONNX Runtime when TensorRT is missing.
    if not tensorrt_available():
        assert isinstance(open_runner(path, prefer_tensorrt=True), OnnxRuntimeRunner)
    odd = tmp_path / "model.bin"
    onnx.save(two_input_model(), odd)
    assert artifact_kind(odd) == "onnx"  # sniffed
    with open_runner(odd) as r:
        assert [s.name for s in r.input_specs()] == ["x", "ids"]


def test_open_runner_errors(tmp_path):
    junk = tmp_path / "weights.bin"
    junk.write_bytes(b"\x00\x01junk")
    with pytest.raises(InvalidInputError, match="suffix"):
        open_runner(junk)
    with pytest.raises(InvalidInputError, match="Unknown backend"):
        open_runner(two_input_model(), backend="openvino")
    with pytest.raises(InvalidInputError, match="does not exist"):
        open_runner(tmp_path / "nothing.plan")
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"\x00" * 16)
    with pytest.raises(InvalidInputError, match="ONNX Runtime cannot run it"):
        open_runner(engine, backend="onnxruntime")


@pytest.mark.skipif(tensorrt_available(), reason="checks the message shown when TensorRT is missing")
def test_engine_without_tensorrt_says_how_to_fix(tmp_path):
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"\x00" * 16)
    with pytest.raises(MissingDependencyError, match=r"trt-edge\[tensorrt\]"):
        open_runner(engine)
    with pytest.raises(MissingDependencyError, match="--backend onnxruntime"):
        open_runner(two_input_model(), backend="tensorrt")
