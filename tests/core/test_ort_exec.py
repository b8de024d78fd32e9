"""trt_edge.ort_exec: every value type ONNX Runtime takes goes in and comes back unchanged."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper

from trt_edge.errors import InvalidInputError, RunnerError
from trt_edge.ort_exec import make_session, run_model


def _model(nodes, inputs, outputs, opset=21):
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


@pytest.mark.parametrize("elem,carrier,values", [
    (T.BFLOAT16, T.FLOAT, [-1.5, 0.25, 2.0, 3.0, -4.0]),
    (T.FLOAT8E4M3FN, T.FLOAT, [-1.5, 0.25, 2.0, 3.0, -4.0]),
    (T.FLOAT8E5M2, T.FLOAT, [-1.5, 0.25, 2.0, 3.0, -4.0]),
    (T.FLOAT8E4M3FNUZ, T.FLOAT, [-1.5, 0.25, 2.0, 3.0, -4.0]),
    (T.INT4, T.INT8, [-8, -1, 0, 1, 7]),      # odd count: the last byte is half used
    (T.UINT4, T.UINT8, [0, 1, 2, 9, 15]),
])
def test_exotic_tensor_types_round_trip(elem, carrier, values):
    """In as an ml_dtypes array, through a Cast to a NumPy type and back: the same values."""
    x = np.asarray(values).astype(helper.tensor_dtype_to_np_dtype(elem))
    model = _model([helper.make_node("Cast", ["x"], ["wide"], to=carrier),
                    helper.make_node("Cast", ["wide"], ["y"], to=elem)],
                   [helper.make_tensor_value_info("x", elem, [5])],
                   [helper.make_tensor_value_info("wide", carrier, [5]),
                    helper.make_tensor_value_info("y", elem, [5])])
    out = run_model(model, {"x": x})
    assert out["y"].dtype == x.dtype
    np.testing.assert_array_equal(out["wide"], np.asarray(values))
    np.testing.assert_array_equal(out["y"].astype(np.float32), x.astype(np.float32))


def test_strings_sequences_and_optionals():
    model = _model([helper.make_node("SequenceConstruct", ["x", "x"], ["seq"]),
                    helper.make_node("Optional", ["x"], ["opt"]),
                    helper.make_node("Identity", ["s"], ["s_out"])],
                   [helper.make_tensor_value_info("x", T.FLOAT, [2]),
                    helper.make_tensor_value_info("s", T.STRING, [2])],
                   [helper.make_tensor_sequence_value_info("seq", T.FLOAT, [2]),
                    helper.make_value_info("opt", helper.make_optional_type_proto(
                        helper.make_tensor_type_proto(T.FLOAT, [2]))),
                    helper.make_tensor_value_info("s_out", T.STRING, [2])])
    x = np.array([1.0, -2.0], np.float32)
    session = make_session(model, optimization="all")
    out = run_model(session, {"x": x, "s": np.array(["edge", "robot"], dtype=object)})
    assert isinstance(out["seq"], list) and len(out["seq"]) == 2
    np.testing.assert_array_equal(out["seq"][1], x)
    np.testing.assert_array_equal(out["opt"], x)
    assert out["s_out"].tolist() == ["edge", "robot"]
    assert list(run_model(session, {"x": x, "s": np.array(["a", "b"], dtype=object)},
                          output_names=["s_out"])) == ["s_out"]


def test_errors_say_what_is_wrong(tmp_path):
    model = _model([helper.make_node("Relu", ["x"], ["y"])],
                   [helper.make_tensor_value_info("x", T.FLOAT, [2])],
                   [helper.make_tensor_value_info("y", T.FLOAT, [2])])
    with pytest.raises(InvalidInputError, match="optimization"):
        make_session(model, optimization="max")
    with pytest.raises(InvalidInputError, match="does not exist"):
        make_session(tmp_path / "missing.onnx")
    with pytest.raises(InvalidInputError, match="not inputs"):
        run_model(model, {"z": np.zeros(2, np.float32)})
    with pytest.raises(RunnerError, match="ONNX Runtime failed"):
        run_model(model, {"x": np.zeros(3, np.float32)})  # wrong shape: ORT's message, wrapped
    bad = model.SerializeToString()[:-7]
    with pytest.raises(RunnerError, match="could not load"):
        make_session(bad)
