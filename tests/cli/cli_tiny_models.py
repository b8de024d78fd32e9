"""Tiny real ONNX models for the CLI tests, built with onnx.helper (run in ONNX Runtime)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_classifier(batch: int | str = "batch", height: int | str = 8, width: int | str = 8,
                    seed: int = 0) -> onnx.ModelProto:
    """input [batch,3,H,W] -> Conv3x3(4) -> BatchNorm -> Relu -> GlobalAveragePool -> Flatten -> Gemm(5)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
    b = rng.standard_normal(4).astype(np.float32) * 0.1
    scale = (1 + 0.1 * rng.standard_normal(4)).astype(np.float32)
    bias = (0.1 * rng.standard_normal(4)).astype(np.float32)
    mean = (0.1 * rng.standard_normal(4)).astype(np.float32)
    var = (1 + 0.1 * rng.random(4)).astype(np.float32)
    fw = rng.standard_normal((5, 4)).astype(np.float32) * 0.5
    fb = rng.standard_normal(5).astype(np.float32) * 0.1
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, height, width])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv", "scale", "bias", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["relu"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"], name="fc", transB=1),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w, "w"), (b, "b"), (scale, "scale"), (bias, "bias"), (mean, "mean"), (var, "var"),
              (fw, "fw"), (fb, "fb"))]
    g = helper.make_graph(nodes, "conv_classifier", [x], [y], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def scalar_input_model() -> onnx.ModelProto:
    """out = x * scale, where ``scale`` is a 0-d input (like silero-vad's ``sr``)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    s = helper.make_tensor_value_info("scale", TensorProto.FLOAT, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    g = helper.make_graph([helper.make_node("Mul", ["x", "scale"], ["y"])], "scalar", [x, s], [y])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def empty_model() -> onnx.ModelProto:
    """A valid model with no inputs and no nodes: one constant output."""
    y = helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])
    g = helper.make_graph([], "empty", [], [y], [numpy_helper.from_array(np.ones(2, np.float32), "c")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def unknown_op_model() -> onnx.ModelProto:
    """A model whose one node is not an ONNX operator (a typo for Relu)."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    g = helper.make_graph([helper.make_node("Rleu", ["input"], ["y"], name="typo")], "unknown_op", [x], [y])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def save(model: onnx.ModelProto, path) -> str:  # noqa: ANN001 - a path
    onnx.save(model, str(path))
    return str(path)
