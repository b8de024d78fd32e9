"""Engine sidecars, compatibility rules and the timing-cache key (CPU tier)."""
from __future__ import annotations

import json

import pytest

from trt_edge.artifacts import read_sidecar, sidecar_path
from trt_edge.build import (EngineMetadata, GpuInfo, TrtVersion, check_engine_compatible,
                            read_engine_metadata, write_engine_metadata)
from trt_edge.build.timing_cache import load_timing_cache, save_timing_cache
from trt_edge.errors import ArtifactError, EngineCompatibilityError

ORIN = GpuInfo("Orin", (8, 7), integrated=True)
H100 = GpuInfo("NVIDIA H100 80GB HBM3", (9, 0))
H100_PCIE = GpuInfo("NVIDIA H100 PCIe", (9, 0))
A100 = GpuInfo("NVIDIA A100-SXM4-40GB", (8, 0))
T4 = GpuInfo("Tesla T4", (7, 5))


def meta(version: str = "10.3.0", gpu: GpuInfo | None = ORIN, **kw) -> EngineMetadata:
    return EngineMetadata(tensorrt_version=version, gpu=gpu, precision="fp16", strongly_typed=False,
                          profiles=[{"input": {"min": [1, 3], "opt": [4, 3], "max": [8, 3]}}],
                          source_onnx_sha256="ab" * 32, **kw)


def test_sidecar_round_trip(tmp_path):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"not really an engine")
    src = tmp_path / "m.onnx"
    src.write_bytes(b"onnx bytes")
    m = meta(calibration_sha256="cd" * 32, plugins=["libsparse.so"], build_time_s=12.5)
    write_engine_metadata(plan, m, onnx_path=src, options={"precision": "fp16"}, build_log="m.plan.log")
    raw = json.loads(sidecar_path(plan).read_text())
    assert "path" not in raw["sources"]["onnx"] and "build_time_s" not in raw["engine"]  # not hashed
    assert raw["provenance"]["build_time_s"] == 12.5
    side = read_sidecar(plan)
    assert side["kind"] == "tensorrt-engine" and side["sources"]["onnx"]["path"].endswith("m.onnx")
    assert side["engine"]["gpu"] == {"name": "Orin", "compute_capability": [8, 7], "integrated": True}
    assert side["build_log"] == "m.plan.log" and side["options"] == {"precision": "fp16"}
    back = read_engine_metadata(plan)
    assert back == m


def test_sidecar_of_another_kind_is_refused(tmp_path):
    from trt_edge.artifacts import write_sidecar

    f = tmp_path / "x.onnx"
    f.write_bytes(b"x")
    write_sidecar(f, "onnx-model")
    with pytest.raises(ArtifactError, match="not a TensorRT engine sidecar"):
        read_engine_metadata(f)


def test_same_version_and_gpu_loads_silently():
    assert check_engine_compatible(meta(), TrtVersion(10, 3, 0, 26), ORIN) == []


def test_other_tensorrt_version_is_refused_with_a_fix():
    with pytest.raises(EngineCompatibilityError, match=r"built with TensorRT 10\.3\.0 .* TensorRT 10\.4\.0.*Rebuild"):
        check_engine_compatible(meta(), TrtVersion(10, 4, 0), ORIN)


def test_version_compatible_rules():
    vc = meta(version="10.3.0", version_compatible=True)
    assert check_engine_compatible(vc, TrtVersion(10, 7, 0), ORIN) == []  # later 10.x
    assert check_engine_compatible(vc, TrtVersion(11, 1, 0), ORIN) == []  # 10 -> 11 documented
    with pytest.raises(EngineCompatibilityError, match="same or a later"):
        check_engine_compatible(vc, TrtVersion(10, 2, 0), ORIN)  # older runtime
    with pytest.raises(EngineCompatibilityError):
        check_engine_compatible(meta(version="11.1.0", version_compatible=True), TrtVersion(12, 0), ORIN)
    with pytest.raises(EngineCompatibilityError, match="lean runtime only runs version-compatible"):
        check_engine_compatible(meta(), TrtVersion(10, 3, 0), ORIN, lean=True)
    assert check_engine_compatible(vc, TrtVersion(10, 3, 0), ORIN, lean=True) == []


def test_gpu_rules():
    with pytest.raises(EngineCompatibilityError, match=r"built for Orin \(sm_87\).*H100"):
        check_engine_compatible(meta(), TrtVersion(10, 3, 0), H100)
    warn = check_engine_compatible(meta(gpu=H100), TrtVersion(10, 3, 0), H100_PCIE)
    assert len(warn) == 1 and "same sm_90" in warn[0]
    amp = meta(gpu=A100, hardware_compatibility="ampere_plus")
    assert check_engine_compatible(amp, TrtVersion(10, 3, 0), H100) == []
    with pytest.raises(EngineCompatibilityError, match="older"):
        check_engine_compatible(amp, TrtVersion(10, 3, 0), T4)
    assert "no GPU information" in check_engine_compatible(meta(), TrtVersion(10, 3, 0), None)[0]


def test_timing_cache_reused_only_for_same_version_and_gpu(tmp_path):
    path = tmp_path / "timing.cache"
    v = TrtVersion(10, 3, 0)
    assert load_timing_cache(path, v, ORIN) == b""  # none yet
    save_timing_cache(path, b"tactics", v, ORIN)
    assert load_timing_cache(path, v, ORIN) == b"tactics"
    assert load_timing_cache(path, TrtVersion(10, 3, 0, 99), ORIN) == b"tactics"  # build number irrelevant
    assert load_timing_cache(path, TrtVersion(10, 4, 0), ORIN) == b""
    assert load_timing_cache(path, v, H100) == b""
    (tmp_path / "timing.cache.key.json").write_text("{broken")
    assert load_timing_cache(path, v, ORIN) == b""
    assert load_timing_cache(None, v, ORIN) == b""
