"""Tiny ONNX models built with onnx.helper for bench tests (real ORT sessions)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def linear_model(w: np.ndarray, b: np.ndarray, batch: int | str = "batch", out_name: str = "logits"
                 ) -> onnx.ModelProto:
    """logits = input @ w + b."""
    n_in, n_out = w.shape
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, n_in])
    y = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [batch, n_out])
    g = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["h"]),
                           helper.make_node("Add", ["h", "b"], [out_name])], "linear", [x], [y],
                          [numpy_helper.from_array(w.astype(np.float32), "w"),
                           numpy_helper.from_array(b.astype(np.float32), "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
