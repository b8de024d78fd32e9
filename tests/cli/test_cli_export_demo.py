"""The CLI as a user runs it: export and the end-to-end demo."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from trt_edge.artifacts import read_sidecar  # noqa: E402
from trt_edge.cli import build_parser, main  # noqa: E402


def test_help_lists_the_pipeline_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("demo", "export", "optimize", "bench", "compare", "eval", "inspect", "calibrate",
                "quantize", "build"):
        assert cmd in out, cmd
    assert build_parser().prog == "trt-edge"


def test_export_cli_with_npz_inputs_and_file_factory(tmp_path, capsys):
    factory = tmp_path / "my_model.py"
    factory.write_text(
        "import torch\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten())\n")
    np.savez(tmp_path / "sample.npz", image=np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "m.onnx"
    rc = main(["export", f"{factory}:build", "-o", str(out), "--inputs", str(tmp_path / "sample.npz"),
               "--input-names", "image", "--output-names", "features", "--exporter", "torchscript"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "verified vs torch" in text and "yes" in text
    side = read_sidecar(out)
    assert side["input_names"] == ["image"] and side["output_names"] == ["features"]


def test_export_cli_errors_are_clear(tmp_path, capsys):
    rc = main(["export", "no_such_module_xyz:build", "-o", str(tmp_path / "x.onnx")])
    assert rc == 2
    assert "Cannot import 'no_such_module_xyz'" in capsys.readouterr().err
    rc = main(["export", "garbage", "-o", str(tmp_path / "x.onnx")])
    assert rc == 2 and "built-in" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_demo_runs_end_to_end_and_reports_every_stage(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path), "--epochs", "1", "--iterations", "20",
               "--exporter", "torchscript"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "backend: onnxruntime" in out and "TensorRT is not installed" in out
    report = json.loads((tmp_path / "demo_report.json").read_text())
    rows = {r["stage"]: r for r in report["rows"]}
    assert set(rows) == {"train (torch fp32)", "export", "optimize", "build fp32", "build fp16", "build int8"}
    fp32 = rows["build fp32"]["accuracy"]
    assert fp32 > 0.9  # a few seconds of training on real digits
    assert abs(rows["export"]["accuracy"] - rows["train (torch fp32)"]["accuracy"]) < 1e-9
    assert abs(rows["build fp16"]["accuracy"] - fp32) <= 0.005
    assert abs(rows["build int8"]["accuracy"] - fp32) <= 0.01
    assert rows["build int8"]["size_kb"] < rows["build fp32"]["size_kb"]
    for stage in ("export", "optimize", "build fp32", "build fp16", "build int8"):
        assert rows[stage]["p50_ms"] > 0 and rows[stage]["p99_ms"] >= rows[stage]["p50_ms"]
    assert (tmp_path / "calibration" / "mnist_cnn.ranges.json").exists()
    cache = (tmp_path / "calibration" / "mnist_cnn.cache").read_text().splitlines()
    assert cache[0].startswith("TRT-") and cache[0].endswith("EntropyCalibration2")
    assert read_sidecar(tmp_path / "engines" / "mnist_cnn.int8.onnx")["precision"] == "int8"
