from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trt_edge.artifacts import (atomic_path, atomic_write_json, load_onnx, model_hash, read_sidecar,
                                save_onnx, sha256_file, sidecar_path, write_sidecar)
from trt_edge.errors import ArtifactError, InvalidInputError, VerificationError
from trt_edge.numerics import FP32_EXACT, Tolerance, assert_close, compare_arrays, compare_outputs
from trt_edge.onnx_io import graph_inputs, parse_shapes, random_inputs


def _tiny_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("step failed")
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_path_refuses_directory(tmp_path):
    with pytest.raises(ArtifactError, match="directory"):
        with atomic_path(tmp_path):
            pass


def test_sidecar_records_sources_options_versions(tmp_path):
    model = _tiny_model()
    path = save_onnx(model, tmp_path / "m.onnx")
    src = tmp_path / "src.txt"
    src.write_text("x")
    write_sidecar(path, "test", sources={"src": src, "given": "sha256:abc"}, options={"a": (1, 2)},
                  extra={"note": np.float32(1.5)})
    side = read_sidecar(path)
    assert side["sha256"] == sha256_file(path) == model_hash(path)
    assert side["sources"]["src"]["sha256"] == sha256_file(src)
    assert side["sources"]["given"] == {"sha256": "abc"}
    assert side["options"] == {"a": [1, 2]} and side["note"] == 1.5
    assert "onnx" in side["tool_versions"] and side["kind"] == "test"
    assert sidecar_path(path).name == "m.onnx.json"


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        load_onnx(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a model")
    with pytest.raises(ArtifactError, match="not a readable ONNX"):
        load_onnx(bad)
    with pytest.raises(ArtifactError, match="no sidecar"):
        read_sidecar(bad)
    atomic_write_json(tmp_path / "bad.onnx.json", {"x": 1})
    (tmp_path / "bad.onnx.json").write_text("{")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_sidecar(bad)


def test_external_data_roundtrip_keeps_caller_model(tmp_path):
    model = _tiny_model()
    before = model.SerializeToString()
    save_onnx(model, tmp_path / "e.onnx", external_data=True)
    assert model.SerializeToString() == before
    loaded = onnx.load(str(tmp_path / "e.onnx"))
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.initializer[0]),
                                  np.arange(6, dtype=np.float32).reshape(2, 3))


def test_compare_figures_on_known_values():
    ref = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    got = ref.copy()
    got[0, 0] += 0.1
    c = compare_arrays("y", got, ref, Tolerance(0, 0.05), classifier=True)
    assert math.isclose(c.max_abs_error, 0.1, rel_tol=1e-5)
    assert math.isclose(c.max_rel_error, 0.1, rel_tol=1e-5)
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    assert math.isclose(c.nmse, 0.01 / signal, rel_tol=1e-4)
    assert math.isclose(c.sqnr_db, 10 * math.log10(signal / 0.01), rel_tol=1e-4)
    assert c.top1_agreement == 1.0 and c.passed is False and c.violations == 1
    same = compare_arrays("y", ref, ref, FP32_EXACT)
    assert same.sqnr_db == math.inf and same.passed
    swapped = compare_arrays("y", ref[:, ::-1], ref, classifier=True)
    assert swapped.top1_agreement == 0.0


def test_compare_handles_nan_shape_and_ints():
    ref = np.array([1.0, np.nan], np.float32)
    assert compare_arrays("n", np.array([1.0, np.nan], np.float32), ref, FP32_EXACT).passed
    assert not compare_arrays("n", np.array([1.0, 2.0], np.float32), ref, FP32_EXACT).passed
    with pytest.raises(VerificationError, match="shape"):
        compare_arrays("s", np.zeros(3), np.zeros(4))
    assert not compare_arrays("i", np.array([1, 2]), np.array([1, 3]), FP32_EXACT).passed
    with pytest.raises(InvalidInputError, match="missing"):
        compare_outputs({}, {"y": ref})
    with pytest.raises(VerificationError, match="rtol"):
        assert_close({"y": ref + 1}, {"y": ref}, FP32_EXACT)


def test_parse_shapes_and_random_inputs():
    assert parse_shapes("input:1x3x224x224,mask:2x8") == {"input": (1, 3, 224, 224), "mask": (2, 8)}
    assert parse_shapes(["a:1", "b:2x2"]) == {"a": (1,), "b": (2, 2)}
    for bad in ("nocolon", "x:1xa"):
        with pytest.raises(InvalidInputError):
            parse_shapes(bad)
    specs = graph_inputs(_tiny_model())
    feeds = random_inputs(specs, dim_values={"b": 5})
    assert feeds["x"].shape == (5, 2) and feeds["x"].dtype == np.float32
    json.dumps({k: v.shape for k, v in feeds.items()})
