"""Typed, canonical sidecars: identical inputs -> identical hashed content; read checks the artifact."""
from __future__ import annotations

import json
import os

import pytest

from trt_edge.artifacts import read_sidecar, sidecar_path, write_sidecar
from trt_edge.errors import ArtifactError
from trt_edge.sidecars import (SIDECAR_SCHEMA, EngineSidecar, Sidecar, canonical_json, content_matches,
                               parse_sidecar)


def _make(folder, when):
    folder.mkdir(parents=True)
    art = folder / "m.plan"
    art.write_bytes(b"engine bytes")
    src = folder / "m.onnx"
    src.write_bytes(b"onnx bytes")
    write_sidecar(art, "tensorrt-engine", sources={"onnx": src},
                  options={"timing_cache": folder / "timing.cache", "precision": "fp16", "tol": float("inf")},
                  extra={"engine": {"precision": "fp16", "plugins": [str(folder / "libp.so")]}},
                  provenance={"build_time_s": when})
    return art, json.loads(sidecar_path(art).read_text())


def test_identical_inputs_give_byte_identical_content_wherever_and_whenever(tmp_path):
    a, doc_a = _make(tmp_path / "a", 1.5)
    b, doc_b = _make(tmp_path / "b" / "deeper", 99.0)
    assert doc_a["content_sha256"] == doc_b["content_sha256"]
    strip = lambda d: {k: v for k, v in d.items() if k not in ("provenance", "content_sha256")}  # noqa: E731
    assert canonical_json(strip(doc_a)) == canonical_json(strip(doc_b))
    hashed = canonical_json(strip(doc_a)).decode()
    assert str(tmp_path) not in hashed and "created" not in hashed and "build_time_s" not in hashed
    assert doc_a["schema"] == SIDECAR_SCHEMA and content_matches(doc_a)
    assert doc_a["provenance"]["paths"]["sources.onnx"] == str(tmp_path / "a" / "m.onnx")
    assert doc_a["provenance"]["build_time_s"] == 1.5
    # readers get the full paths back where they were
    side = read_sidecar(a)
    assert side["engine"]["plugins"] == [str(tmp_path / "a" / "libp.so")]
    assert side["options"]["timing_cache"] == str(tmp_path / "a" / "timing.cache")
    assert side["sources"]["onnx"]["path"] == str(tmp_path / "a" / "m.onnx")


def test_typed_parse_and_edits_detected(tmp_path):
    art, doc = _make(tmp_path / "a", 1.0)
    typed = parse_sidecar(doc, "m.plan.json")
    assert isinstance(typed, EngineSidecar) and typed.section["engine"]["precision"] == "fp16"
    assert typed.content_sha256 == doc["content_sha256"]  # round trip keeps the hashed bytes
    doc["engine"]["precision"] = "int8"
    assert not content_matches(doc)
    with pytest.raises(ArtifactError, match="without \\['engine'\\]"):
        parse_sidecar({k: v for k, v in doc.items() if k != "engine"})
    assert type(parse_sidecar({"kind": "something-new"})) is Sidecar  # unknown kinds stay readable


def test_read_refuses_an_artifact_that_changed_after_its_sidecar(tmp_path):
    art, _ = _make(tmp_path / "a", 1.0)
    art.write_bytes(b"another engine")
    with pytest.raises(ArtifactError, match="does not match its sidecar"):
        read_sidecar(art)
    assert read_sidecar(art, verify=False)["kind"] == "tensorrt-engine"
    os.remove(art)  # a sidecar whose artifact is gone is still readable (nothing to check)
    assert read_sidecar(art)["kind"] == "tensorrt-engine"
