"""Tiny ONNX models built with onnx.helper for runner error cases (real ORT sessions)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def two_input_model() -> onnx.ModelProto:
    """y = x * 2 + cast(ids); x float32 [batch, 4], ids int64 [batch, 4] (shared 'batch')."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    nodes = [helper.make_node("Mul", ["x", "two"], ["x2"]),
             helper.make_node("Cast", ["ids"], ["idsf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["x2", "idsf"], ["y"])]
    g = helper.make_graph(nodes, "two_inputs", [x, ids], [y],
                          [numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def linear_model(w: np.ndarray, b: np.ndarray, batch: int | str = "batch", out_name: str = "logits",
                 declared_out: int | None = None) -> onnx.ModelProto:
    """logits = input @ w + b. ``declared_out`` lets a test declare a wrong output width."""
    n_in, n_out = w.shape
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, n_in])
    y = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [batch, declared_out or n_out])
    g = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["h"]),
                           helper.make_node("Add", ["h", "b"], [out_name])], "linear", [x], [y],
                          [numpy_helper.from_array(w.astype(np.float32), "w"),
                           numpy_helper.from_array(b.astype(np.float32), "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def bad_reshape_model() -> onnx.ModelProto:
    """Loads fine, fails at run time: Reshape of 4 elements to [3]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "bad", [x], [y],
                          [numpy_helper.from_array(np.array([3], np.int64), "shape")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
