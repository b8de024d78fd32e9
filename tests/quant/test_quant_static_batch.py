"""Fixed-batch models (static ``1x1x28x28``, the way TensorRT users export) in every precision path."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from trt_edge.errors import InvalidInputError
from trt_edge.quant import CalibrationOptions, NumpyReader, QuantizeOptions, calibrate, quantize_qdq
from trt_edge.quant.batching import fixed_batch, fixed_sequence_length, rebatch, split_feed_counted

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def static_mnist(mnist_model, mnist_split, tmp_path_factory):
    """The session's MNIST CNN exported with a static batch of 1 (no dynamic axes)."""
    import torch
    from trt_edge.export import ExportOptions, export_onnx
    path = tmp_path_factory.mktemp("static") / "mnist_b1.onnx"
    export_onnx(mnist_model, torch.from_numpy(mnist_split.x_test[:1]), path,
                ExportOptions(input_names=["input"], output_names=["logits"], exporter="torchscript",
                              dynamic_batch=False))
    model = onnx.load(path)
    assert fixed_batch(model) == 1
    return path


def _float_session(model):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _logits(model, x):
    sess = _float_session(model)
    return np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])


def test_rebatch_groups_splits_pads_and_checks_dims():
    x = np.arange(10, dtype=np.float32)[:, None]
    out = list(rebatch([{"a": x[:3]}, {"a": x[3:4]}, {"a": x[4:10]}], 4))
    assert [b["a"].shape[0] for b in out] == [4, 4]  # the remainder (2 samples) is dropped, order kept
    np.testing.assert_array_equal(np.concatenate([b["a"] for b in out])[:, 0], np.arange(8))
    padded = list(rebatch([{"a": x[:3]}], 4))  # fewer samples than one batch: repeated to fill it
    assert len(padded) == 1 and padded[0]["a"][:, 0].tolist() == [0, 1, 2, 0]
    assert [b["a"].shape[0] for b in rebatch([{"a": x}], 1)] == [1] * 10
    with pytest.raises(InvalidInputError, match="axis 1"):
        list(rebatch([{"ids": np.zeros((2, 7), np.int64)}], 1, dims={"ids": {1: 16}}))
    pieces = split_feed_counted({"a": x[:5]}, 2)
    assert [rows for _, rows in pieces] == [2, 2, 1] and pieces[-1][0]["a"][:, 0].tolist() == [4, 4]


def test_fixed_sequence_length_of_a_static_transformer_export():
    from onnx import TensorProto, helper
    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, [1, 128]) for n in ("input_ids", "attention_mask")]
    g = helper.make_graph([helper.make_node("Add", ["input_ids", "attention_mask"], ["y"])], "t", ins,
                          [helper.make_tensor_value_info("y", TensorProto.INT64, [1, 128])])
    m = helper.make_model(g)
    assert fixed_batch(m) == 1 and fixed_sequence_length(m) == 128


@pytest.mark.parametrize("target", ["tensorrt", "onnxruntime"])
def test_static_batch_every_method_default_options(static_mnist, mnist_split, target):
    """Calibrate with every method (auto: the default) on reader batches of 32: the batch-1 model
    runs them one sample at a time; the auto selection scores single samples, never a merged batch."""
    x = mnist_split.x_train[:48]
    model = onnx.load(static_mnist)
    ref = _logits(model, mnist_split.x_test[:200])
    for method in ("auto", "entropy", "percentile", "mse", "max"):
        r = calibrate(model, NumpyReader({"input": x}, batch_size=32),
                      CalibrationOptions(method=method, target=target, show_progress=False))
        assert r.num_samples == 48 and r.num_batches == 48 and r.settings["model_fixed_batch"] == 1
        if method == "auto":
            assert r.settings["auto_selection"]["eval_samples"] >= 8
            out = _logits(quantize_qdq(model, r, QuantizeOptions(target=target)), mnist_split.x_test[:200])
            agree = float(np.mean(out.argmax(1) == ref.argmax(1)))
            assert agree >= 0.97, agree
    # raw arrays: batched at the model's batch, not at batch_size
    r = calibrate(model, {"input": x[:5]}, CalibrationOptions(method="max", batch_size=32, show_progress=False))
    assert r.num_batches == 5


def test_static_batch_cli_build_batches_eval_compare_sensitivity(static_mnist, mnist_split, tmp_path, capsys):
    from trt_edge.bench.compare import CompareOptions, compare
    from trt_edge.bench.evaluate import EvalOptions, evaluate
    from trt_edge.bench.inputs import InputOptions
    from trt_edge.build.builder import calibration_batches
    from trt_edge.cli import main
    from trt_edge.onnx_io import graph_inputs
    from trt_edge.quant import CalibrationResult
    from trt_edge.quant.sensitivity import layer_sensitivity

    npz = tmp_path / "calib.npz"
    np.savez(npz, input=mnist_split.x_train[:40])
    ranges, out = tmp_path / "r.json", tmp_path / "q.onnx"
    assert main(["calibrate", str(static_mnist), "--data", str(npz), "-o", str(ranges)]) == 0  # defaults
    assert "fixed batch of 1" in capsys.readouterr().out
    for target in ("tensorrt", "onnxruntime"):
        assert main(["quantize", str(static_mnist), "--ranges", str(ranges), "-o", str(out), "--target", target]) == 0
    # build --calib-data's batches (and the TensorRT 10 calibrator's): exactly the network's batch
    batches = calibration_batches(npz, graph_inputs(onnx.load(static_mnist)), 32)
    assert len(batches) == 40 and all(b["input"].shape == (1, 1, 28, 28) for b in batches)
    # eval and compare feed the batch-1 models 30 rows, one at a time
    labelled = {"x": mnist_split.x_test[:30], "y": mnist_split.y_test[:30]}
    fp32 = evaluate(static_mnist, labelled, EvalOptions(show_progress=False), backend="onnxruntime")
    int8 = evaluate(out, labelled, EvalOptions(show_progress=False), backend="onnxruntime")
    assert fp32.metrics.num_samples == int8.metrics.num_samples == 30
    assert abs(fp32.metrics.accuracy - int8.metrics.accuracy) <= 2 / 30
    cmp = compare(static_mnist, out, CompareOptions(inputs=InputOptions(inputs={"input": mnist_split.x_test[:7]})),
                  backend_reference="onnxruntime", backend_candidate="onnxruntime")
    assert cmp.report.outputs[0].sqnr_db > 15
    assert cmp.input_shapes["input"][0] == 7
    sens = layer_sensitivity(onnx.load(static_mnist), CalibrationResult.load(ranges),
                             NumpyReader({"input": mnist_split.x_train[:20]}, batch_size=16), show_progress=False)
    assert len(sens.layers) >= 4 and all(np.isfinite(l.sqnr_db) for l in sens.layers)


def test_dynamic_batch_keeps_the_readers_batches(mnist_onnx, mnist_split):
    r = calibrate(onnx.load(mnist_onnx), NumpyReader({"input": mnist_split.x_train[:100]}, batch_size=32),
                  CalibrationOptions(method="max", show_progress=False))
    assert r.num_batches == 4 and "model_fixed_batch" not in r.settings
