"""Third-party model forms: opset < 13, models already (weight-)quantized; bias correction; the
low-quality warning; deterministic MNIST training."""
from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trt_edge.errors import CalibrationError, QuantizationError
from trt_edge.numerics import compare_arrays
from trt_edge.quant import CalibrationOptions, NumpyReader, QuantizeOptions, calibrate, quantize_qdq
from trt_edge.quant.qdq import count_ops, find_existing_quantization, model_opset

ort = pytest.importorskip("onnxruntime")


def _run(model, x):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # Q/DQ in float
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_opset_11_model_is_converted_and_quantized(mnist_model, mnist_split, tmp_path):
    """paddle2onnx-style opset-11 exports: converted to 13 (said in the ranges), then quantized."""
    import torch
    from trt_edge.export import ExportOptions, export_onnx
    path = export_onnx(mnist_model, torch.from_numpy(mnist_split.x_test[:2]), tmp_path / "mnist11.onnx",
                       ExportOptions(input_names=["input"], output_names=["logits"], exporter="torchscript",
                                     opset=11)).path
    old = onnx.load(path)
    assert model_opset(old) == 11
    x = mnist_split.x_train[:128]
    r = calibrate(old, NumpyReader({"input": x}, batch_size=64),
                  CalibrationOptions(method="percentile", show_progress=False))
    assert r.settings["converted_from_opset"] == 11
    q = quantize_qdq(old, r)  # the ranges' hash is the opset-11 model's: accepted, then converted the same way
    assert model_opset(q) >= 13 and count_ops(q)["QuantizeLinear"] >= 4
    ref = _run(old, mnist_split.x_test[:300])
    assert compare_arrays("logits", _run(q, mnist_split.x_test[:300]), ref).sqnr_db > 20


def _weight_only_cast_mul(model: onnx.ModelProto) -> onnx.ModelProto:
    """The FP32 model with every Conv/Gemm weight as Mul(Cast(int8), per-channel scale)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name: i for i in m.graph.initializer}
    nodes = []
    for n in m.graph.node:
        if n.op_type in ("Conv", "Gemm") and n.input[1] in inits:
            w = numpy_helper.to_array(inits[n.input[1]])
            axis = 0  # Conv: output channels; Gemm (transB=1 from torch): rows
            s = np.abs(w).reshape(w.shape[0], -1).max(1) / 127.0
            shape = (-1,) + (1,) * (w.ndim - 1)
            q = np.clip(np.rint(w / s.reshape(shape)), -127, 127).astype(np.int8)
            qn, sn = n.input[1] + "_q", n.input[1] + "_s"
            m.graph.initializer.extend([numpy_helper.from_array(q, qn),
                                        numpy_helper.from_array(s.reshape(shape).astype(np.float32), sn)])
            nodes += [helper.make_node("Cast", [qn], [qn + "_f"], to=TensorProto.FLOAT),
                      helper.make_node("Mul", [qn + "_f", sn], [n.input[1] + "_dq"])]
            n.input[1] = n.input[1] + "_dq"
            del axis
        nodes.append(n)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def test_weight_only_int8_is_kept_and_activations_quantized(mnist_onnx, mnist_split):
    wo = _weight_only_cast_mul(onnx.load(mnist_onnx))
    onnx.checker.check_model(wo)
    found = find_existing_quantization(wo)
    assert len(found.cast_mul) == 4 and not found.activation_qdq
    r = calibrate(wo, NumpyReader({"input": mnist_split.x_train[:128]}, batch_size=64),
                  CalibrationOptions(method="percentile", show_progress=False))
    assert not any(t.endswith("_dq") for t in r.ranges)  # dequantized weights are not activations
    report: list = []
    q = quantize_qdq(wo, r, report=report)
    producers = {o: n for n in q.graph.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    for n in q.graph.node:
        if n.op_type in ("Conv", "Gemm"):
            w_dq = producers[n.input[1]]
            assert w_dq.op_type == "DequantizeLinear" and inits[w_dq.input[0]].dtype == np.int8
            assert producers[n.input[0]].op_type == "DequantizeLinear"  # the activation is quantized
    assert report[0].weight_tensors == 0  # no weight re-quantized: the model's own int8 weights are kept
    x = mnist_split.x_test[:300]
    assert compare_arrays("logits", _run(q, x), _run(wo, x)).sqnr_db > 25


def test_already_quantized_model_is_refused_before_any_work(mnist_onnx, mnist_split):
    model = onnx.load(mnist_onnx)
    r = calibrate(model, NumpyReader({"input": mnist_split.x_train[:64]}, batch_size=64),
                  CalibrationOptions(method="max", show_progress=False))
    q = quantize_qdq(model, r)
    with pytest.raises(QuantizationError, match="already INT8-quantized"):
        quantize_qdq(q, r, QuantizeOptions(check_model_hash=False))
    with pytest.raises(CalibrationError, match="already INT8-quantized"):
        calibrate(q, NumpyReader({"input": mnist_split.x_train[:8]}), CalibrationOptions(show_progress=False))


def _depthwise_model(rng: np.random.Generator, channels: int = 16) -> onnx.ModelProto:
    w = rng.normal(0, 1, (channels, 1, 3, 3)).astype(np.float32)
    w[:, :, 1, 1] *= 8  # a dominant centre tap: the other taps sit coarsely on the int8 grid
    b = rng.normal(0, 0.1, channels).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], group=channels, name="dw")], "dw",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, 10, 10])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("target", ["tensorrt", "onnxruntime"])
def test_bias_correction_removes_the_mean_shift_of_weight_rounding(rng, target):
    channels = 16
    model = _depthwise_model(rng, channels)
    means = rng.uniform(2.0, 6.0, channels).astype(np.float32)
    x = (means[None, :, None, None] + rng.normal(0, 0.3, (64, channels, 12, 12))).astype(np.float32)
    r = calibrate(model, NumpyReader({"x": x}, batch_size=32),
                  CalibrationOptions(method="max", target=target, show_progress=False))
    np.testing.assert_allclose(r.settings["channel_means"]["x"], x.mean(axis=(0, 2, 3)), rtol=1e-5)
    ref = _run(model, x)
    err = {}
    for corrected in (False, True):
        q = quantize_qdq(model, r, QuantizeOptions(target=target, bias_correction=corrected))
        err[corrected] = np.abs((_run(q, x) - ref).mean(axis=(0, 2, 3)))
    # the per-channel mean error left is the activations' rounding, far below the weights' shift
    assert err[True].mean() < 0.25 * err[False].mean(), err


def test_low_quality_warning_names_tensors_and_suggests_keep_worst(mnist_onnx, mnist_split, caplog):
    with caplog.at_level(logging.WARNING, logger="trt_edge"):
        r = calibrate(onnx.load(mnist_onnx), NumpyReader({"input": mnist_split.x_train[:64]}, batch_size=64),
                      CalibrationOptions(warn_below_db=150.0, show_progress=False))
    w = r.settings["quality_warning"]
    assert w["final_db"] < 150 and 1 <= len(w["noisiest_tensors"]) <= 5
    assert all(t in r.ranges for t, _ in w["noisiest_tensors"])
    assert "--keep-worst" in caplog.text and w["noisiest_tensors"][0][0] in caplog.text
    ok = calibrate(onnx.load(mnist_onnx), NumpyReader({"input": mnist_split.x_train[:64]}, batch_size=64),
                   CalibrationOptions(warn_below_db=0.0, show_progress=False))
    assert "quality_warning" not in ok.settings


def test_mnist_training_is_deterministic(mnist_split):
    torch = pytest.importorskip("torch")
    from trt_edge.data.mnist import MnistSplit
    from trt_edge.models.mnist import train_mnist_cnn
    small = MnistSplit(mnist_split.x_train[:320], mnist_split.y_train[:320], mnist_split.x_test, mnist_split.y_test)
    threads = torch.get_num_threads()
    a, b = (train_mnist_cnn(small, epochs=1, seed=3) for _ in range(2))
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name


def test_constants_convert_on_read_and_behave_like_a_dict():
    """The plan's constant lookup converts a weight only when asked (a transformer's 90 MB of
    weights were converted on every plan), with dict semantics for what the plan uses."""
    from onnx import numpy_helper as nh

    from trt_edge.quant.qdq import _constants
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    nodes = [helper.make_node("Constant", [], ["c"], value=nh.from_array(np.array([2.0], np.float32))),
             helper.make_node("MatMul", ["x", "w"], ["y0"]), helper.make_node("Mul", ["y0", "c"], ["y"])]
    model = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [nh.from_array(w, "w")]))
    consts = _constants(model)
    assert len(dict.keys(consts)) == 0                      # nothing converted yet
    assert "w" in consts and "c" in consts and "x" not in consts
    np.testing.assert_array_equal(consts["w"], w)
    assert consts.get("c").tolist() == [2.0] and consts.get("x") is None
    consts["b"] = np.zeros(3, np.float32)                   # the bias-correction path adds entries
    assert "b" in consts
    with pytest.raises(KeyError):
        consts["x"]
