"""`trt-edge build` where TensorRT is missing: the ONNX Runtime artifact, end to end (CPU tier).

Runs the real CLI on the real MNIST CNN (trained on real digits) and checks the
artifact in ONNX Runtime against the source model: FP32 to rtol 1e-5, FP16 to
the FP16 tolerance, INT8 by accuracy and SQNR on held-out digits.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from trt_edge.artifacts import read_sidecar
from trt_edge.build import tensorrt_available
from trt_edge.cli import main
from trt_edge.numerics import FP16, FP32_EXACT, compare_outputs
from trt_edge.runtime.onnxrt import run_onnx

pytestmark = pytest.mark.skipif(tensorrt_available(), reason="checks the no-TensorRT fallback")


def _quant_has(*names: str) -> bool:
    try:
        import trt_edge.quant as q
    except ImportError:
        return False
    return all(hasattr(q, n) for n in names)


def _logits(model, x: np.ndarray) -> np.ndarray:
    return run_onnx(model, {"input": x})["logits"]


def test_plan_request_writes_onnx_beside_it_and_says_why(mnist_onnx, mnist_split, tmp_path, capsys):
    out = tmp_path / "engines" / "mnist.plan"
    assert main(["build", str(mnist_onnx), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    art = out.with_suffix(".onnx")
    assert "TensorRT is not installed" in text and str(art) in text
    assert art.exists() and not out.exists()
    raw = json.loads((tmp_path / "engines" / "mnist.onnx.json").read_text())
    assert raw["requested_output"] == "mnist.plan"  # the hashed content holds no absolute path
    assert raw["provenance"]["paths"]["requested_output"] == str(out)
    side = read_sidecar(art)  # puts the full paths back
    assert side["kind"] == "onnxruntime-artifact" and side["backend"] == "onnxruntime"
    assert side["fallback_reason"] == "TensorRT is not installed" and side["precision"] == "fp32"
    assert side["requested_output"] == str(out)
    x = mnist_split.x_test[:64]
    rep = compare_outputs({"logits": _logits(str(art), x)}, {"logits": _logits(str(mnist_onnx), x)},
                          FP32_EXACT, classifier=True)
    assert rep.passed, rep.table()


def test_require_tensorrt_fails_clearly(mnist_onnx, tmp_path, capsys):
    # the CLI logs errors to stderr (its logger does not propagate)
    assert main(["build", str(mnist_onnx), "-o", str(tmp_path / "m.plan"), "--require-tensorrt"]) == 2
    assert "TensorRT ('tensorrt') is not installed" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_int8_without_calibration_is_a_user_error(mnist_onnx, tmp_path, capsys):
    assert main(["build", str(mnist_onnx), "-o", str(tmp_path / "m.onnx"), "--precision", "int8",
                 "--no-optimize"]) == 2
    err = capsys.readouterr().err
    assert "--ranges" in err and "--calib-data" in err


@pytest.mark.skipif(not _quant_has("convert_fp16", "Fp16Options"), reason="trt_edge.quant.convert_fp16 not available yet")
def test_fp16_artifact(mnist_onnx, mnist_split, tmp_path):
    out = tmp_path / "mnist.fp16.onnx"
    assert main(["build", str(mnist_onnx), "-o", str(out), "--precision", "fp16", "--no-optimize"]) == 0
    m = onnx.load(str(out))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)
    x = mnist_split.x_test[:256]
    rep = compare_outputs({"logits": _logits(str(out), x)}, {"logits": _logits(str(mnist_onnx), x)},
                          FP16, classifier=True)
    assert rep.worst().top1_agreement >= 0.99, rep.table()
    assert rep.worst().sqnr_db > 30, rep.table()


@pytest.mark.skipif(not _quant_has("calibrate", "quantize_qdq", "CalibrationOptions", "QuantizeOptions"),
                    reason="trt_edge.quant calibrate/quantize_qdq not available yet")
def test_int8_artifact_from_calibration_data(mnist_onnx, mnist_split, tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=mnist_split.x_train[:128])
    out = tmp_path / "mnist.int8.onnx"
    assert main(["build", str(mnist_onnx), "-o", str(out), "--precision", "int8", "--calib-data",
                 str(calib), "--calib-method", "max", "--no-optimize"]) == 0
    m = onnx.load(str(out))
    assert sum(n.op_type == "QuantizeLinear" for n in m.graph.node) >= 2
    side = json.loads(out.with_name(out.name + ".json").read_text())
    assert "calibration_data" in side["sources"] and side["precision"] == "int8"
    x, y = mnist_split.x_test, mnist_split.y_test
    ref, got = _logits(str(mnist_onnx), x), _logits(str(out), x)
    acc_ref, acc_int8 = (ref.argmax(1) == y).mean(), (got.argmax(1) == y).mean()
    assert acc_int8 >= acc_ref - 0.02, (acc_ref, acc_int8)
    rep = compare_outputs({"logits": got}, {"logits": ref}, FP16, classifier=True)
    assert rep.worst().sqnr_db > 15, rep.table()
