"""A LiteRT-quantized INT8 model imports as explicit Q/DQ with the model's own scales."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from tflite_helpers import photo

from trt_edge.tflite import ImportOptions, import_tflite
from trt_edge.tflite.reader import read_model


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _feeds():
    return [{"input_1": photo((64, 64), "coffee")}]  # not one of the calibration photos


def test_int8_model_keeps_its_scales_and_agrees_per_operator_within_one_step(iris_int8):
    tfl = read_model(iris_int8)
    res = import_tflite(iris_int8, None, feeds=_feeds())
    assert res.verified and res.quantized_tensors > 100
    # every operator, run alone on LiteRT's own int8 inputs, is within one quantization step
    checks = [c for c in res.operator_checks if c.step]
    assert len(checks) > 150 and all(c.elements_over_one_step == 0 for c in checks)
    assert {c.kind for c in checks} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "PRELU", "ADD", "MAX_POOL_2D"}
    # end to end the one-step differences compound, but stay at the int8 noise level
    assert min(o.sqnr_db for o in res.verification[0].report.outputs) > 25
    inits = _initializers(res.model)
    nodes = {n.name: n for n in res.model.graph.node}
    # activations: QuantizeLinear with exactly the TFLite tensor's scale and zero point
    act = [t for t in tfl.tensors if t.type_name == "INT8" and t.data is None and t.quant is not None]
    q_params = {(float(inits[n.input[1]]), int(inits[n.input[2]])) for n in nodes.values()
                if n.op_type == "QuantizeLinear"}
    want = {(float(np.float32(t.quant.scale[0])), int(t.quant.zero_point[0])) for t in act}
    assert want <= q_params
    # weights: int8 initializers behind per-channel DequantizeLinear (axis 0 of OIHW) with the model's scales
    per_channel = [n for n in nodes.values() if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
                   and inits[n.input[0]].dtype == np.int8 and inits[n.input[1]].size > 1]
    assert len(per_channel) >= 80
    conv_w = {float(s) for t in tfl.tensors if t.data is not None and t.type_name == "INT8" and t.quant is not None
              and t.quant.scale.size > 1 for s in t.quant.scale}
    onnx_w = {float(s) for n in per_channel for s in inits[n.input[1]]}
    assert conv_w == onnx_w
    assert all(next(a.i for a in n.attribute if a.name == "axis") == 0 for n in per_channel)
    assert res.asymmetric_tensors  # TFLite's int8 activations have zero points


def test_symmetric_activations_for_tensorrt(iris_int8):
    res = import_tflite(iris_int8, None, ImportOptions(symmetric_activations=True), feeds=_feeds())
    inits = _initializers(res.model)
    zps = [int(inits[n.input[2]]) for n in res.model.graph.node if n.op_type == "QuantizeLinear"]
    assert zps and all(z == 0 for z in zps) and not res.asymmetric_tensors
    # LiteRT's saturation is kept (a Clip per converted activation), and each operator is within one new step
    assert res.onnx_ops.get("Clip", 0) >= 100
    assert all(c.elements_over_one_step == 0 for c in res.operator_checks if c.step)


def test_int8_interface_model(mp_models, tmp_path):
    """int8 inputs/outputs: DequantizeLinear at the input, QuantizeLinear producing the int8 outputs."""
    from trt_edge.tflite.litert_quant import quantize_int8
    path = tmp_path / "fd_int8_io.tflite"
    quantize_int8(mp_models["face_detection_short_range"], [[photo((128, 128), "astronaut")],
                                                             [photo((128, 128), "chelsea")]], path, io_dtype="int8")
    res = import_tflite(path, None)
    assert res.verified
    int8 = onnx.TensorProto.INT8
    assert [i.type.tensor_type.elem_type for i in res.model.graph.input] == [int8]
    assert [o.type.tensor_type.elem_type for o in res.model.graph.output] == [int8, int8]
    assert res.model.graph.node[0].op_type == "DequantizeLinear"
    assert all(c.elements_over_one_step == 0 for c in res.operator_checks if c.step)
    for out in res.verification[0].report.outputs:  # integer outputs, compared as codes
        assert out.max_abs_error <= 2 and out.sqnr_db > 30


def _uint8_model() -> bytes:
    """TFLite's legacy uint8 scheme: asymmetric uint8 weights and activations, int32 bias."""
    from tflite_builder import Const, Op, build
    rng = np.random.default_rng(0)
    w = rng.integers(0, 256, (6, 3, 3, 3)).astype(np.uint8)
    b = rng.integers(-500, 500, 6).astype(np.int32)
    s_in, s_w, s_out = 1 / 255.0, 0.01, 6 / 255.0
    conv = ("Conv2DOptions", {"padding": 0, "strideW": 1, "strideH": 1, "dilationWFactor": 1, "dilationHFactor": 1,
                              "fusedActivationFunction": 3})
    pool = ("Pool2DOptions", {"padding": 1, "strideW": 2, "strideH": 2, "filterWidth": 2, "filterHeight": 2})
    return build({"x": (1, 8, 8, 3)}, [
        Op("QUANTIZE", ["x"], "xq", (1, 8, 8, 3), out_dtype=np.uint8, out_quant=(s_in, 0)),
        Op("CONV_2D", ["xq", Const(w, [s_w], [128]), Const(b, [s_in * s_w], [0])], "c", (1, 8, 8, 6), conv,
           out_dtype=np.uint8, out_quant=(s_out, 0)),
        Op("AVERAGE_POOL_2D", ["c"], "p", (1, 4, 4, 6), pool, out_dtype=np.uint8, out_quant=(s_out, 0)),
        Op("DEQUANTIZE", ["p"], "y", (1, 4, 4, 6))], ["y"])


def test_legacy_uint8_model(tmp_path):
    path = tmp_path / "u8.tflite"
    path.write_bytes(_uint8_model())
    res = import_tflite(path, None)
    assert res.verified and res.quantized_tensors == 3 and len(res.asymmetric_tensors) == 3
    assert all(c.elements_over_one_step == 0 for c in res.operator_checks if c.step)
    out = res.verification[0].report.outputs[0]
    assert out.max_abs_error <= 6 / 255.0 * 1.001  # one output step end to end on this small model
    sym = import_tflite(path, None, ImportOptions(symmetric_activations=True))
    inits = _initializers(sym.model)
    q = [n for n in sym.model.graph.node if n.op_type == "QuantizeLinear"]
    assert q and all(inits[n.input[2]].dtype == np.int8 and int(inits[n.input[2]]) == 0 for n in q)
    assert all(c.elements_over_one_step == 0 for c in sym.operator_checks if c.step)
    # uint8 weights (zero point 128) cannot be TensorRT Q/DQ weights: kept exact, in float
    dq_inputs = {n.input[0] for n in sym.model.graph.node if n.op_type == "DequantizeLinear"}
    assert not any(v.dtype == np.uint8 for k, v in inits.items() if k in dq_inputs)
