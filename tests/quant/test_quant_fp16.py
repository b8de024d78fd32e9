"""Mixed-precision FP16 conversion: numerics vs FP32, kept-FP32 report, I/O types."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from trt_edge.numerics import compare_arrays
from trt_edge.quant import Fp16Options, convert_fp16
from trt_edge.quant.ranges import CalibrationResult, TensorRange

ort = pytest.importorskip("onnxruntime")


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feed)[0]


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    return {v.name: v.type.tensor_type.elem_type for v in
            list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}


def test_mnist_fp16_matches_fp32_in_reference_evaluator(mnist_onnx, mnist_split):
    """onnx.reference computes in float16 where the graph says so (ORT on CPU would upcast)."""
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(mnist_onnx)
    fp16, report = convert_fp16(model)
    assert report.fp16_nodes == len([n for n in model.graph.node if n.op_type != "Constant"])
    types = _elem_types(fp16)
    assert types["input"] == TensorProto.FLOAT and types["logits"] == TensorProto.FLOAT
    convs = [n for n in fp16.graph.node if n.op_type == "Conv"]
    assert all(types[n.output[0]] == TensorProto.FLOAT16 for n in convs)
    assert all(i.data_type == TensorProto.FLOAT16 for i in fp16.graph.initializer)
    x = mnist_split.x_test[:8]
    ref = _run(model, {"input": x})
    out = ReferenceEvaluator(fp16).run(None, {"input": x})[0]
    cmp = compare_arrays("logits", out, ref, classifier=True)
    assert cmp.top1_agreement == 1.0
    assert cmp.max_abs_error < 0.05 * float(np.abs(ref).max()) and cmp.sqnr_db > 40, cmp
    ort_out = _run(fp16, {"input": mnist_split.x_test})
    ort_ref = _run(model, {"input": mnist_split.x_test})
    assert np.mean(ort_out.argmax(1) == mnist_split.y_test) >= np.mean(ort_ref.argmax(1) == mnist_split.y_test) - 0.003


def test_minilm_fp16_keeps_sensitive_ops_fp32(minilm_onnx, minilm_bundle):
    model = onnx.load(minilm_onnx)
    fp16, report = convert_fp16(model)
    kept = {op for _, op, _ in report.fp32_nodes}
    assert {"Softmax", "LayerNormalization"} <= kept
    assert all(why for _, _, why in report.fp32_nodes)
    types = _elem_types(fp16)
    for n in fp16.graph.node:
        if n.op_type in ("Softmax", "LayerNormalization"):
            assert types[n.output[0]] == TensorProto.FLOAT, n.name
        if n.op_type == "MatMul":
            assert types[n.output[0]] == TensorProto.FLOAT16, n.name
    feed = minilm_bundle.tokenize(["Lidar sees a pedestrian.", "The battery is almost empty, return to dock."])
    cmp = compare_arrays("embeddings", _run(fp16, feed), _run(model, feed))
    assert cmp.cosine > 0.9999 and cmp.max_abs_error < 5e-3, cmp
    assert "kept FP32" in report.table()


def test_fp16_io_types_exclusions_and_overflow_ranges(mnist_onnx):
    model = onnx.load(mnist_onnx)
    fp16, _ = convert_fp16(model, Fp16Options(keep_io_types=False))
    assert fp16.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert fp16.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    _, rep = convert_fp16(model, Fp16Options(exclude_op_types=("Gemm",)))
    assert {n for n, _, _ in rep.fp32_nodes} == {n.name for n in gemms}
    hot = gemms[0].output[0]
    ranges = CalibrationResult({hot: TensorRange(amax=1e5, observed_amax=1e5)}, model_hash="x")
    _, rep = convert_fp16(model, Fp16Options(ranges=ranges))
    assert [(n, why) for n, _, why in rep.fp32_nodes if "FP16 limit" in why] and len(rep.fp32_nodes) == 1
