"""`trt-edge import`, then the usual pipeline on the imported model, from the command line."""
from __future__ import annotations

import json

import numpy as np
from tflite_helpers import CALIBRATION_PHOTOS, photo

from trt_edge.cli import main


def test_import_writes_onnx_with_sidecar_and_prints_the_table(mp_models, tmp_path, capsys):
    out = tmp_path / "selfie.onnx"
    assert main(["import", str(mp_models["selfie_segmentation"]), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "verified vs LiteRT" in text and "max_abs" in text and "activation_10" in text
    side = json.loads((tmp_path / "selfie.onnx.json").read_text())
    assert side["kind"] == "tflite-import" and side["converter"] == "trt_edge.tflite"
    assert side["tflite_ops"]["CUSTOM:Convolution2DTransposeBias"] == 1 and side["onnx_ops"]["ConvTranspose"] == 1
    assert all(v["passed"] for v in side["verification"]) and side["sources"]["tflite"]["sha256"]
    # the natural check after an import: compare MODEL.tflite MODEL.onnx (LiteRT vs ONNX Runtime)
    report = tmp_path / "compare.json"
    assert main(["compare", str(mp_models["selfie_segmentation"]), str(out), "--json", str(report)]) == 0
    assert "activation_10" in capsys.readouterr().out
    outputs = json.loads(report.read_text())["report"]["outputs"]
    assert [o["name"] for o in outputs] == ["activation_10"] and outputs[0]["sqnr_db"] > 80


def test_import_errors_exit_2_and_write_nothing(mp_models, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    assert main(["import", str(mp_models["face_landmark_with_attention"]), "-o", str(out)]) == 2
    assert main(["import", str(tmp_path / "missing.tflite"), "-o", str(out)]) == 2
    bogus = tmp_path / "bogus.tflite"
    bogus.write_bytes(b"not a flatbuffer at all")
    assert main(["import", str(bogus), "-o", str(out)]) == 2
    assert not out.exists() and not (tmp_path / "x.onnx.json").exists()


def test_imported_model_goes_through_optimize_calibrate_quantize_build(mp_models, tmp_path, capsys):
    src = mp_models["iris_landmark"]
    m = tmp_path / "iris.onnx"
    assert main(["-q", "import", str(src), "-o", str(m)]) == 0
    assert main(["-q", "optimize", str(m), "-o", str(tmp_path / "iris.opt.onnx")]) == 0
    np.savez(tmp_path / "calib.npz", input_1=np.concatenate([photo((64, 64), p) for p in CALIBRATION_PHOTOS]))
    assert main(["-q", "calibrate", str(tmp_path / "iris.opt.onnx"), "--data", str(tmp_path / "calib.npz"),
                 "--method", "max", "-o", str(tmp_path / "iris.ranges.json")]) == 0
    assert main(["-q", "quantize", str(tmp_path / "iris.opt.onnx"), "--ranges", str(tmp_path / "iris.ranges.json"),
                 "-o", str(tmp_path / "iris.int8.onnx")]) == 0
    assert main(["-q", "build", str(tmp_path / "iris.int8.onnx"), "-o", str(tmp_path / "engine" / "iris.plan")]) == 0
    capsys.readouterr()
    # the INT8 model still answers like the float one on a photo it was not calibrated on
    from trt_edge.bench.compare import CompareOptions, compare
    from trt_edge.bench.inputs import InputOptions
    feed = {"input_1": photo((64, 64), "coffee")}
    res = compare(src, tmp_path / "iris.int8.onnx", CompareOptions(inputs=InputOptions(inputs=feed)))
    assert min(o.sqnr_db for o in res.report.outputs) > 20


def test_missing_extra_names_it(monkeypatch):
    import sys

    import pytest

    from trt_edge.errors import MissingDependencyError
    from trt_edge.tflite.reader import read_model
    monkeypatch.setitem(sys.modules, "tflite", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'trt-edge\[tflite\]'"):
        read_model(b"12345678TFL3")


def test_import_options_are_checked(mp_models, tmp_path):
    import pytest

    from trt_edge.errors import InvalidInputError
    from trt_edge.tflite import ImportOptions
    with pytest.raises(InvalidInputError, match="opset 9"):
        ImportOptions(opset=9)
    # verification inputs with the wrong name: exit 2 with the expected names, nothing written
    np.savez(tmp_path / "bad.npz", wrong=np.zeros((1, 64, 64, 3), np.float32))
    out = tmp_path / "iris.onnx"
    assert main(["import", str(mp_models["iris_landmark"]), "-o", str(out), "--inputs", str(tmp_path / "bad.npz")]) == 2
    assert not out.exists()
