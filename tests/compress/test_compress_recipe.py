"""Recipes from Python (the example) and from `trt-edge compress`, with a report per step."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trt_edge.cli import main
from trt_edge.compress.recipe import Step, parse_recipe
from trt_edge.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[2]


def test_recipe_parsing_and_errors():
    assert parse_recipe("prune:0.3, finetune ,qat:2") == [Step("prune", 0.3), Step("finetune", 1.0),
                                                          Step("qat", 2.0)]
    for bad, msg in (("prune:x", "not a number"), ("squash", "Unknown recipe step"), ("qat,prune", "last"),
                     (" , ", "empty")):
        with pytest.raises(InvalidInputError, match=msg):
            parse_recipe(bad)


def test_compress_example_runs_the_recipe_and_weight_sharing(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "compress_mnist.py"), str(tmp_path), "--quick"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [l.split() for l in proc.stdout.splitlines() if re.match(r"^(original|\d+\.)", l)]
    assert [r[0] for r in rows] == ["original", "1.prune:0.5", "2.finetune:1", "3.qat:1"]
    assert all(r[-1] == "yes" for r in rows)        # every step's ONNX matched torch in ORT
    macs = [float(r[2]) for r in rows]
    assert macs[1] <= 0.53 * macs[0]
    acc = [float(r[5].rstrip("%")) for r in rows]
    assert acc[2] >= acc[0] - 2.0 and acc[3] >= acc[2] - 1.0  # fine-tune recovers; QAT keeps it
    ratio = float(re.search(r"([\d.]+)x smaller than FP32", proc.stdout).group(1))
    assert ratio >= 6.0
    assert (tmp_path / "qat.int8.onnx").exists() and (tmp_path / "mnist.4bit.tews").exists()


def test_cli_compress_writes_report_and_onnx_per_step(tmp_path, capsys):
    out, report = tmp_path / "out", tmp_path / "report.json"
    rc = main(["-q", "compress", "mnist_cnn", "--recipe", "lowrank:0.8,sparse24:1", "-o", str(out),
               "--train-samples", "300", "--base-epochs", "1", "--latency-runs", "0", "--json", str(report)])
    assert rc == 0
    data = json.loads(report.read_text())
    steps = data["steps"]
    assert [s["step"] for s in steps] == ["original", "1.lowrank:0.8", "2.sparse24:1"]
    assert steps[1]["params"] < steps[0]["params"] and all(s["verified"] for s in steps)
    assert "layers 2:4" in steps[2]["notes"]
    assert sorted(p.name for p in out.glob("*.onnx")) == ["1.lowrank_0.8.onnx", "2.sparse24_1.onnx", "original.onnx"]
    assert "2.sparse24:1" in capsys.readouterr().out
    assert main(["compress", "resnet", "--recipe", "prune", "-o", str(out)]) == 2
    assert main(["compress", "mnist_cnn", "--recipe", "prune:abc", "-o", str(out)]) == 2
    (tmp_path / "file").write_text("x")
    assert main(["compress", "mnist_cnn", "--recipe", "prune", "-o", str(tmp_path / "file")]) == 2
