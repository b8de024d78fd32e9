"""Documentation runs: the examples are executed (STYLE.md, house rule 5)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]


def test_python_api_example_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "python_api.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "INT8 vs FP32 top-1 agreement" in proc.stdout
    agreement = float(proc.stdout.rsplit("digits:", 1)[1].strip().rstrip("%"))
    assert agreement >= 97.0
    for name in ("mnist.onnx", "mnist.opt.onnx", "mnist.int8.onnx", "mnist.ranges.json", "mnist.cache"):
        assert (tmp_path / name).exists(), name
