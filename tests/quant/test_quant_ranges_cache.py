"""Ranges files, TensorRT calibration caches and the legacy calibrator adapter."""
from __future__ import annotations

import struct
import sys
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from trt_edge.errors import ArtifactError, BuildError
from trt_edge.quant import (CalibrationOptions, CalibrationResult, NumpyReader, calibrate,
                            canonical_model_hash, load_trt_cache, read_trt_cache, write_trt_cache)
from trt_edge.quant.trt_cache import parse_trt_cache, render_trt_cache, trt_version_code


def _tiny_model(weight_scale: float = 1.0) -> onnx.ModelProto:
    w = (np.arange(12, dtype=np.float32).reshape(4, 3) - 5.0) * weight_scale
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"], name="relu")],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 3], w)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def tiny_result(rng) -> tuple[onnx.ModelProto, CalibrationResult]:
    model = _tiny_model()
    data = {"x": rng.standard_normal((64, 4)).astype(np.float32)}
    # entropy explicitly: these ranges become a TensorRT EntropyCalibration2 cache
    opts = CalibrationOptions(method="entropy", scope="all", show_progress=False)
    return model, calibrate(model, NumpyReader(data, batch_size=16), opts)


def test_ranges_round_trip_and_sidecar(tmp_path, tiny_result):
    model, res = tiny_result
    assert set(res.ranges) == {"x", "h", "y"} and res.num_samples == 64 and res.num_batches == 4
    path = res.save(tmp_path / "tiny.ranges.json")
    assert (tmp_path / "tiny.ranges.json.json").exists()
    back = CalibrationResult.load(path, expected_model_hash=canonical_model_hash(model))
    assert back.model_hash == res.model_hash and back.settings["method"] == "entropy"
    for name, r in res.ranges.items():
        assert back.ranges[name].amax == pytest.approx(r.amax, rel=1e-12)
        assert back.scale(name) == pytest.approx(r.amax / 127)


def test_stale_ranges_are_refused(tmp_path, tiny_result):
    _, res = tiny_result
    path = res.save(tmp_path / "tiny.ranges.json")
    changed = _tiny_model(weight_scale=2.0)
    with pytest.raises(ArtifactError, match="Stale calibration"):
        CalibrationResult.load(path, model=changed)
    (tmp_path / "bad.json").write_text('{"kind": "something-else"}')
    with pytest.raises(ArtifactError, match="not a trt-edge ranges file"):
        CalibrationResult.load(tmp_path / "bad.json")


def test_trt_version_codes():
    assert trt_version_code("10.3.0") == 100300
    assert trt_version_code("10.13.0.35") == 101300
    assert trt_version_code("8.6.1") == 8601
    assert trt_version_code(100300) == 100300


def test_trt_cache_format_round_trip(tmp_path, tiny_result):
    model, res = tiny_result
    path = write_trt_cache(res, tmp_path / "tiny.cache", trt_version="10.3.0")
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2"
    name, hexval = lines[1].split(": ")
    assert len(hexval) == 8
    # big-endian IEEE-754 bits of the scale
    assert struct.unpack(">f", bytes.fromhex(hexval))[0] == pytest.approx(res.ranges[name].scale, rel=1e-7)
    scales = read_trt_cache(path)
    assert set(scales) == set(res.ranges)
    for n, s in scales.items():
        assert s == np.float32(res.ranges[n].scale)
    data = load_trt_cache(path, canonical_model_hash(model), trt_version="10.3.0")
    assert data == render_trt_cache(res, "10.3.0")


def test_trt_cache_staleness_and_version_checks(tmp_path, tiny_result):
    _, res = tiny_result
    path = write_trt_cache(res, tmp_path / "tiny.cache")
    with pytest.raises(ArtifactError, match="Stale TensorRT cache"):
        load_trt_cache(path, canonical_model_hash(_tiny_model(3.0)))
    with pytest.raises(ArtifactError, match="TensorRT would ignore it"):
        load_trt_cache(path, None, trt_version="10.8.0")
    bare = tmp_path / "foreign.cache"
    bare.write_bytes(path.read_bytes())  # no sidecar: cannot be verified
    with pytest.raises(ArtifactError, match="Cannot verify"):
        load_trt_cache(bare, res.model_hash)
    with pytest.raises(ArtifactError, match="header"):
        parse_trt_cache("not a cache\nx: 3c000000")


# ---------------------------------------------------------------- legacy calibrator adapter
class _FakeCalibratorBase:
    """Stands in for tensorrt.IInt8EntropyCalibrator2 (TensorRT cannot be installed here):
    checks only that the adapter initialises its base and answers TensorRT's calls."""

    def __init__(self) -> None:
        self.base_initialised = True


@pytest.fixture
def fake_tensorrt(monkeypatch):
    mod = types.ModuleType("tensorrt")
    mod.IInt8EntropyCalibrator2 = _FakeCalibratorBase
    mod.__version__ = "10.3.0"
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    from trt_edge.build import calibrator
    calibrator._REAL_CLASS.clear()
    yield mod
    calibrator._REAL_CLASS.clear()


def test_adapter_serves_our_ranges_as_a_trt_cache(fake_tensorrt, tiny_result, tmp_path):
    from trt_edge.build.calibrator import EntropyCalibrator2Adapter

    model, res = tiny_result
    cal = EntropyCalibrator2Adapter([], res, ["x"], model_hash=canonical_model_hash(model))
    assert isinstance(cal, _FakeCalibratorBase) and cal.base_initialised
    assert isinstance(cal, EntropyCalibrator2Adapter)
    cache = cal.read_calibration_cache()
    assert cache == render_trt_cache(res, "10.3.0")
    assert cal.get_batch(["x"]) == []  # no data: TensorRT uses the cache
    # a ranges json path works too, and a stale one is refused
    rpath = res.save(tmp_path / "r.ranges.json")
    assert EntropyCalibrator2Adapter(None, rpath, ["x"]).read_calibration_cache() == cache
    with pytest.raises(ArtifactError, match="Stale"):
        EntropyCalibrator2Adapter(None, rpath, ["x"], model_hash=canonical_model_hash(_tiny_model(4.0)))


def test_adapter_writes_the_cache_tensorrt_computes(fake_tensorrt, tmp_path, rng):
    from trt_edge.build.calibrator import EntropyCalibrator2Adapter

    with pytest.raises(BuildError, match="needs data or a cache"):
        EntropyCalibrator2Adapter([], None, ["x"])
    batches = [{"x": rng.standard_normal((8, 4)).astype(np.float32)}]
    cal = EntropyCalibrator2Adapter(batches, tmp_path / "new.cache", ["x"])
    assert cal.get_batch_size() == 8 and cal.read_calibration_cache() is None
    cal.write_calibration_cache(b"TRT-100300-EntropyCalibration2\nx: 3c000000\n")
    assert read_trt_cache(tmp_path / "new.cache") == {"x": struct.unpack(">f", bytes.fromhex("3c000000"))[0]}
    with pytest.raises(BuildError, match="lack network inputs"):
        EntropyCalibrator2Adapter(batches, None, ["input_ids"])


def _patched_stubs() -> bool:
    import sysconfig
    from pathlib import Path
    return (Path(sysconfig.get_paths()["purelib"]) / "tensorrt-stubs" / "__init__.pyi").exists()


@pytest.mark.skipif(not _patched_stubs(), reason="patched tensorrt stubs not installed: run "
                    "`pip install --no-deps tensorrt-stubs && python scripts/install_trt_stubs.py`")
def test_adapter_type_checks_against_tensorrt_stubs(tmp_path):
    """mypy checks the adapter's overrides against IInt8EntropyCalibrator2 in the stubs, and the
    check is live: a wrong return type in a copy of the adapter is reported."""
    import subprocess
    from pathlib import Path
    pytest.importorskip("mypy")
    root = Path(__file__).resolve().parents[2]
    src = root / "trt_edge" / "build" / "calibrator.py"
    cmd = [sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent"]
    ok = subprocess.run(cmd + [str(src)], capture_output=True, text=True, cwd=root, timeout=240)
    assert ok.returncode == 0, ok.stdout
    bad = tmp_path / "calibrator_bad.py"
    text = src.read_text().replace("from ..", "from trt_edge.")
    bad.write_text(text.replace("def get_batch_size(self) -> int:", "def get_batch_size(self) -> str:  # wrong"))
    res = subprocess.run(cmd + [str(bad)], capture_output=True, text=True, cwd=root, timeout=240)
    assert res.returncode != 0 and "get_batch_size" in res.stdout and "IInt8Calibrator" in res.stdout
