"""Our builder orchestration against a labelled TEST DOUBLE of tensorrt (fake_tensorrt.py).

These tests check only what *we* do with TensorRT's API: flags per precision
and version, network creation flags, profiles, timing cache, DLA, plugins,
parser-error reporting, files and sidecars. They are never the evidence that an
engine builds or runs: the tensorrt tier (test_trt_engines.py) is.
"""
from __future__ import annotations

import json

import pytest

from trt_edge.build import BuildOptions, parse_profiles, read_engine_metadata
from trt_edge.build.builder import build_engine
from trt_edge.errors import BuildError, EngineCompatibilityError, InvalidInputError

PROFILE = ["input:1x1x28x28/8x1x28x28/32x1x28x28"]


def engine_json(path) -> dict:
    return json.loads(path.read_bytes())


def opts(**kw) -> BuildOptions:
    kw.setdefault("profiles", parse_profiles(PROFILE))
    kw.setdefault("optimize_graph", False)
    return BuildOptions(**kw)


def test_fp32_on_trt10_profiles_workspace_level(fake_trt, mnist_onnx, tmp_path):
    trt = fake_trt(version="10.3.0.26")
    out = tmp_path / "mnist.plan"
    res = build_engine(mnist_onnx, out, opts(workspace=1 << 30, optimization_level=5))
    e = engine_json(out)
    assert e["fake_engine"] and e["network_flags"] == 0 and e["flags"] == [] and e["cleared"] == []
    assert e["pools"] == {"MemoryPoolType.WORKSPACE": 1 << 30} and e["opt_level"] == 5
    assert e["profiles"] == [{"input": [[1, 1, 28, 28], [8, 1, 28, 28], [32, 1, 28, 28]]}]
    assert ("init_libnvinfer_plugins", "") in trt.calls
    meta = read_engine_metadata(out)
    assert meta.tensorrt_version == "10.3.0.26" and meta.precision == "fp32"
    assert meta.profiles == [{"input": {"min": [1, 1, 28, 28], "opt": [8, 1, 28, 28], "max": [32, 1, 28, 28]}}]
    from trt_edge.artifacts import sha256_file
    assert meta.source_onnx_sha256 == sha256_file(mnist_onnx)
    assert [io["name"] for io in meta.io] == ["input", "logits"]
    assert "TEST DOUBLE" in res.log_path.read_text() and len(res.warnings) == 1
    build_engine(mnist_onnx, tmp_path / "b.plan", opts(allow_tf32=False))
    assert engine_json(tmp_path / "b.plan")["cleared"] == ["BuilderFlag.TF32"]


def test_fp16_weak_flag_on_10_and_strongly_typed_flag(fake_trt, mnist_onnx, tmp_path):
    fake_trt(version="10.8.0")
    build_engine(mnist_onnx, tmp_path / "a.plan", opts(precision="fp16"))
    e = engine_json(tmp_path / "a.plan")
    assert e["flags"] == ["BuilderFlag.FP16"] and e["network_flags"] == 0
    build_engine(mnist_onnx, tmp_path / "b.plan", opts(precision="fp32", strongly_typed=True))
    e = engine_json(tmp_path / "b.plan")
    assert e["network_flags"] == 1 << 1 and e["flags"] == []  # 1 << STRONGLY_TYPED


def test_trt11_has_no_weak_flags_and_refuses_plain_int8(fake_trt, mnist_onnx, tmp_path):
    fake_trt(version="11.4.0")
    build_engine(mnist_onnx, tmp_path / "a.plan", opts())
    e = engine_json(tmp_path / "a.plan")
    assert e["network_flags"] == 0 and e["flags"] == []  # strong typing is implicit in 11
    assert read_engine_metadata(tmp_path / "a.plan").strongly_typed
    with pytest.raises(InvalidInputError, match="explicit Q/DQ"):
        build_engine(mnist_onnx, tmp_path / "b.plan", opts(precision="int8"))
    with pytest.raises(BuildError, match="DLA is not available through TensorRT 11"):
        build_engine(mnist_onnx, tmp_path / "c.plan", opts(dla_core=0))
    assert not (tmp_path / "b.plan").exists() and not (tmp_path / "c.plan").exists()


def test_dla_sparsity_compat_flags(fake_trt, mnist_onnx, tmp_path):
    fake_trt(version="10.3.0", dla_cores=2)
    build_engine(mnist_onnx, tmp_path / "a.plan", opts(dla_core=1, sparse_weights=True,
                                                       version_compatible=True, exclude_lean_runtime=True,
                                                       hardware_compatibility="ampere_plus"))
    e = engine_json(tmp_path / "a.plan")
    assert e["device"] == "DeviceType.DLA" and e["dla_core"] == 1
    assert e["flags"] == ["BuilderFlag.SPARSE_WEIGHTS", "BuilderFlag.VERSION_COMPATIBLE",
                          "BuilderFlag.EXCLUDE_LEAN_RUNTIME", "BuilderFlag.GPU_FALLBACK"]
    assert e["hardware"] == "HardwareCompatibilityLevel.AMPERE_PLUS"
    m = read_engine_metadata(tmp_path / "a.plan")
    assert m.dla_core == 1 and m.version_compatible and m.exclude_lean_runtime
    with pytest.raises(BuildError, match="has 2 DLA core"):
        build_engine(mnist_onnx, tmp_path / "b.plan", opts(dla_core=2))


def test_plugins_loaded_and_serialized(fake_trt, mnist_onnx, tmp_path):
    trt = fake_trt(version="10.3.0")
    lib = tmp_path / "libtrt_edge_sparse.so"
    lib.write_bytes(b"\x7fELF")  # the double's registry does not dlopen it
    build_engine(mnist_onnx, tmp_path / "a.plan", opts(plugins=[lib], serialize_plugins=True,
                                                       version_compatible=True))
    assert ("load_library", str(lib)) in trt.calls
    assert engine_json(tmp_path / "a.plan")["plugins_to_serialize"] == [str(lib)]
    m = read_engine_metadata(tmp_path / "a.plan")
    assert m.plugins == [str(lib)] and m.plugins_serialized


def test_timing_cache_persists_and_is_invalidated_by_version(fake_trt, mnist_onnx, tmp_path):
    cache = tmp_path / "timing.cache"
    fake_trt(version="10.3.0")
    build_engine(mnist_onnx, tmp_path / "a.plan", opts(timing_cache=cache))
    assert engine_json(tmp_path / "a.plan")["timing_cache_in"] == ""  # fresh
    assert cache.read_bytes() == b"+timed"
    build_engine(mnist_onnx, tmp_path / "b.plan", opts(timing_cache=cache, precision="fp16"))
    assert engine_json(tmp_path / "b.plan")["timing_cache_in"] == "+timed"  # reused
    fake_trt(version="10.4.0")
    build_engine(mnist_onnx, tmp_path / "c.plan", opts(timing_cache=cache))
    assert engine_json(tmp_path / "c.plan")["timing_cache_in"] == ""  # other TensorRT: fresh


def test_parser_errors_name_node_and_op(fake_trt, mnist_onnx, tmp_path):
    import onnx

    ops = {n.op_type for n in onnx.load(str(mnist_onnx)).graph.node}
    victim = "Conv" if "Conv" in ops else sorted(ops)[0]
    fake_trt(version="10.3.0", unsupported_ops=(victim,))
    with pytest.raises(BuildError) as err:
        build_engine(mnist_onnx, tmp_path / "a.plan", opts())
    msg = str(err.value)
    assert f"(op {victim})" in msg and "node #" in msg and "trt-edge optimize" in msg and "--plugins" in msg
    assert not (tmp_path / "a.plan").exists()


def test_failed_build_keeps_the_log_and_writes_no_engine(fake_trt, mnist_onnx, tmp_path):
    fake_trt(version="10.3.0", fail_build=True)
    with pytest.raises(BuildError, match="out of tactics") as err:
        build_engine(mnist_onnx, tmp_path / "a.plan", opts())
    assert "a.plan.log" in str(err.value)
    assert (tmp_path / "a.plan.log").exists() and not (tmp_path / "a.plan").exists()


def test_dynamic_batch_without_shapes_gets_the_default_range(fake_trt, mnist_onnx, tmp_path):
    fake_trt(version="10.3.0")
    build_engine(mnist_onnx, tmp_path / "a.plan", BuildOptions(optimize_graph=False))
    assert engine_json(tmp_path / "a.plan")["profiles"] == [
        {"input": [[1, 1, 28, 28], [8, 1, 28, 28], [128, 1, 28, 28]]}]
    with pytest.raises(InvalidInputError, match="--shapes input:"):
        build_engine(mnist_onnx, tmp_path / "b.plan", BuildOptions(optimize_graph=False, default_batch=None))
    assert not (tmp_path / "b.plan").exists()


def test_runner_refuses_an_engine_from_another_tensorrt_before_deserializing(fake_trt, mnist_onnx, tmp_path):
    from trt_edge.runtime.tensorrt import TensorRTRunner

    fake_trt(version="10.3.0")
    plan = tmp_path / "a.plan"
    build_engine(mnist_onnx, plan, opts())
    trt = fake_trt(version="10.7.0")  # the "deployment machine" has another TensorRT
    runner = TensorRTRunner(plan)
    with pytest.raises(EngineCompatibilityError, match=r"built with TensorRT 10\.3\.0.*10\.7\.0"):
        runner.activate()
    assert ("deserialize_cuda_engine",) not in trt.calls and not runner.is_active
    runner.close()  # safe on a never-activated runner, and twice
    runner.close()


def test_legacy_calibrator_gets_our_ranges_as_a_tensorrt_cache(fake_trt, mnist_onnx, mnist_split, tmp_path):
    """TensorRT 10 implicit INT8: our ranges reach TensorRT through the adapter's cache."""
    from trt_edge.quant import CalibrationOptions, calibrate

    fake_trt(version="10.3.0")
    ranges = calibrate(str(mnist_onnx), {"input": mnist_split.x_train[:64]}, CalibrationOptions(method="max"))
    rpath = ranges.save(tmp_path / "mnist.ranges.json")
    out = tmp_path / "a.plan"
    build_engine(mnist_onnx, out, opts(precision="int8", calib_cache=rpath, optimize_graph=True))
    e = engine_json(out)
    assert e["flags"] == ["BuilderFlag.INT8"] and e["calibrator"] == "EntropyCalibrator2Adapter"
    assert e["calibration_cache_bytes"] > 0 and e["calibration_batches"] == 0
    meta = read_engine_metadata(out)
    from trt_edge.artifacts import sha256_file
    assert meta.calibration_sha256 == sha256_file(rpath)
    # the same request on TensorRT 11 is refused: no implicit INT8 there
    fake_trt(version="11.0.0")
    with pytest.raises(InvalidInputError, match="explicit Q/DQ"):
        build_engine(mnist_onnx, tmp_path / "b.plan", opts(precision="int8", calib_cache=rpath))


def test_int8_qdq_inserted_from_ranges_on_both_generations(fake_trt, mnist_onnx, mnist_split, tmp_path):
    from trt_edge.quant import CalibrationOptions, calibrate

    ranges = calibrate(str(mnist_onnx), {"input": mnist_split.x_train[:64]}, CalibrationOptions(method="max"))
    rpath = ranges.save(tmp_path / "r.json")
    for version, flags in (("10.3.0", ["BuilderFlag.INT8"]), ("11.4.0", [])):
        trt = fake_trt(version=version)
        out = tmp_path / f"{version}.plan"
        build_engine(mnist_onnx, out, opts(precision="int8", ranges=rpath))
        assert engine_json(out)["flags"] == flags and engine_json(out)["calibrator"] is None
        parsed_ops = [c for c in trt.calls if c[0] == "parse"][0][2]
        assert "QuantizeLinear" in parsed_ops and "DequantizeLinear" in parsed_ops


def test_fp16_on_trt11_converts_the_onnx_before_parsing(fake_trt, mnist_onnx, tmp_path):
    trt = fake_trt(version="11.4.0")
    build_engine(mnist_onnx, tmp_path / "a.plan", opts(precision="fp16"))
    e = engine_json(tmp_path / "a.plan")
    assert e["flags"] == [] and e["network_flags"] == 0  # strongly typed: no FP16 flag exists
    parsed_ops = [c for c in trt.calls if c[0] == "parse"][0][2]
    assert "Cast" in parsed_ops  # FP32 I/O kept, FP16 inside
    assert read_engine_metadata(tmp_path / "a.plan").precision == "fp16"


def test_runner_from_onnx_builds_once_per_model_and_options(fake_trt, mnist_onnx, tmp_path):
    import onnx

    from trt_edge.runtime.tensorrt import TensorRTRunner

    trt = fake_trt(version="10.3.0")
    proto = onnx.load(str(mnist_onnx))
    r1 = TensorRTRunner.from_onnx(proto, build_options=opts(), engine_dir=tmp_path)
    r2 = TensorRTRunner.from_onnx(proto, build_options=opts(), engine_dir=tmp_path)
    r3 = TensorRTRunner.from_onnx(proto, build_options=opts(precision="fp16"), engine_dir=tmp_path)
    assert r1.engine_source == r2.engine_source != r3.engine_source
    assert sum(c[0] == "parse" for c in trt.calls) == 2  # the second request reused the engine
    assert not r1.is_active
