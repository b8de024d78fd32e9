"""Shape-profile parsing, build options and the precision plan (pure code, CPU tier)."""
from __future__ import annotations

import numpy as np
import pytest

from trt_edge.build import (BuildOptions, GraphPrecision, ProfileSpec, ShapeRange, TrtVersion,
                            parse_profile, parse_profiles, parse_size, parse_version, plan_precision,
                            resolve_profiles)
from trt_edge.errors import InvalidInputError
from trt_edge.onnx_io import TensorSpec, graph_inputs


def test_parse_version_integers_not_strings():
    assert parse_version("10.3.0.26") == TrtVersion(10, 3, 0, 26)
    assert parse_version("11.4") == TrtVersion(11, 4)
    assert parse_version("10.13.0.35.post1") == TrtVersion(10, 13, 0, 35)
    # the string comparison trap: "10.10" < "10.9" as strings
    assert parse_version("10.10.0") > parse_version("10.9.0")
    assert parse_version("10.3").has_weak_typing and not parse_version("11.0").has_weak_typing
    assert parse_version("10.3").supports_dla and not parse_version("11.1").supports_dla
    with pytest.raises(InvalidInputError):
        parse_version("trt-ten")


def test_parse_profile_min_opt_max_and_fixed():
    prof = parse_profile("ids:1x16/1x128/4x256, mask:1x16/1x128/4x256")
    assert prof.shapes["ids"] == ShapeRange((1, 16), (1, 128), (4, 256))
    assert list(prof.shapes) == ["ids", "mask"]
    fixed = parse_profile("input:8x3x224x224").shapes["input"]
    assert fixed.is_fixed and fixed.max == (8, 3, 224, 224)
    # a name containing ':' (ONNX allows it) splits on the last ':'
    assert "encoder:0" in parse_profile("encoder:0:1x4/2x4/3x4").shapes
    profs = parse_profiles(["input:1x1x28x28/8x1x28x28/32x1x28x28", "input:64x1x28x28"])
    assert len(profs) == 2 and profs[1].shapes["input"].is_fixed
    assert prof.to_json()["ids"] == {"min": [1, 16], "opt": [1, 128], "max": [4, 256]}


@pytest.mark.parametrize("bad", ["input", "input:1x3/2x3", "input:4x3/2x3/8x3", "input:1x3/1x3x4/1x3",
                                 "input:axb", "a:1x2,a:1x2", ""])
def test_parse_profile_rejects_with_hint(bad):
    with pytest.raises(InvalidInputError):
        parse_profile(bad)


def test_resolve_profiles_against_the_mnist_model(mnist_onnx):
    import onnx

    inputs = graph_inputs(onnx.load(str(mnist_onnx)))
    assert inputs[0].is_dynamic  # [batch, 1, 28, 28]
    with pytest.raises(InvalidInputError, match="--shapes input:"):
        resolve_profiles([], inputs)
    ok = resolve_profiles(parse_profiles(["input:1x1x28x28/8x1x28x28/32x1x28x28"]), inputs)
    assert ok[0].shapes["input"].max == (32, 1, 28, 28)
    with pytest.raises(InvalidInputError, match="fixed at 28"):
        resolve_profiles(parse_profiles(["input:1x1x28x28/8x1x28x28/32x1x32x32"]), inputs)
    with pytest.raises(InvalidInputError, match="not model inputs"):
        resolve_profiles(parse_profiles(["pixels:1x1x28x28"]), inputs)
    with pytest.raises(InvalidInputError, match="rank"):
        resolve_profiles(parse_profiles(["input:1x28x28/8x28x28/32x28x28"]), inputs)


def test_default_batch_range_only_for_batch_only_dynamic_inputs():
    f32, i64 = np.dtype("float32"), np.dtype("int64")
    img = TensorSpec("input", ("batch", 3, 224, 224), f32)
    out = resolve_profiles([], [img], default_batch=(1, 4, 16))
    assert out[0].shapes["input"] == ShapeRange((1, 3, 224, 224), (4, 3, 224, 224), (16, 3, 224, 224))
    seq = TensorSpec("input_ids", ("batch", "seq"), i64)  # sequence length needs explicit shapes
    with pytest.raises(InvalidInputError, match="--shapes input_ids:"):
        resolve_profiles([], [seq], default_batch=(1, 4, 16))
    with pytest.raises(InvalidInputError):
        BuildOptions(default_batch=(8, 4, 16))  # not ordered


def test_resolve_profiles_static_model_gets_one_fixed_profile():
    spec = TensorSpec("x", (2, 3), np.dtype("float32"))
    out = resolve_profiles([], [spec])
    assert len(out) == 1 and out[0].shapes["x"] == ShapeRange.fixed((2, 3))


def test_parse_size_and_options_validation(tmp_path):
    assert parse_size("2G") == 2 << 30 and parse_size("512MiB") == 512 << 20
    assert parse_size("1.5g") == int(1.5 * (1 << 30)) and parse_size(4096) == 4096
    with pytest.raises(InvalidInputError):
        parse_size("lots")
    with pytest.raises(InvalidInputError, match="precision"):
        BuildOptions(precision="int4")
    with pytest.raises(InvalidInputError, match="0..5"):
        BuildOptions(optimization_level=7)
    with pytest.raises(InvalidInputError, match="version_compatible"):
        BuildOptions(serialize_plugins=True)
    with pytest.raises(InvalidInputError, match="does not exist"):
        BuildOptions(plugins=[tmp_path / "libmissing.so"])
    opts = BuildOptions(precision="FP16", timing_cache="x.cache")  # type: ignore[arg-type]
    assert opts.precision == "fp16" and opts.timing_cache is not None and opts.timing_cache.name == "x.cache"


V10, V11 = TrtVersion(10, 3), TrtVersion(11, 4)
PLAIN = GraphPrecision(has_qdq=False, has_fp16=False)
QDQ = GraphPrecision(has_qdq=True, has_fp16=False)


def test_precision_plan_fp32_fp16():
    assert plan_precision("fp32", V10, PLAIN) == plan_precision("fp32", V10, PLAIN)
    p = plan_precision("fp32", V10, PLAIN)
    assert not p.strongly_typed and p.flags == ()
    assert plan_precision("fp32", V11, PLAIN).strongly_typed
    p10 = plan_precision("fp16", V10, PLAIN)
    assert p10.flags == ("FP16",) and not p10.convert_fp16 and not p10.strongly_typed
    p11 = plan_precision("fp16", V11, PLAIN)
    assert p11.strongly_typed and p11.flags == () and p11.convert_fp16
    # strongly typed on 10 on request: convert the ONNX like on 11
    assert plan_precision("fp16", V10, PLAIN, strongly_typed=True).convert_fp16
    # an FP16 graph needs no second conversion
    assert not plan_precision("fp16", V11, GraphPrecision(False, True)).convert_fp16
    with pytest.raises(InvalidInputError, match="no weakly typed"):
        plan_precision("fp32", V11, PLAIN, strongly_typed=False)


def test_precision_plan_int8_paths():
    # Q/DQ already there: explicit quantization on both
    assert plan_precision("int8", V11, QDQ).strongly_typed
    assert plan_precision("int8", V10, QDQ).flags == ("INT8",)
    assert plan_precision("int8", V10, QDQ, mixed_fp16=True).flags == ("INT8", "FP16")
    # our ranges -> insert Q/DQ (primary path) on both generations
    p = plan_precision("int8", V11, PLAIN, have_ranges=True)
    assert p.quantize_qdq and p.strongly_typed and p.flags == ()
    p = plan_precision("int8", V10, PLAIN, have_calib_data=True)
    assert p.quantize_qdq and p.flags == ("INT8",) and not p.use_calibrator
    # legacy implicit calibrator only on 10
    p = plan_precision("int8", V10, PLAIN, have_calib_data=True, prefer_calibrator=True)
    assert p.use_calibrator and p.flags == ("INT8",) and not p.quantize_qdq
    assert plan_precision("int8", V10, PLAIN, have_calib_cache=True).use_calibrator
    with pytest.raises(InvalidInputError, match="explicit Q/DQ"):
        plan_precision("int8", V11, PLAIN, have_calib_cache=True)
    with pytest.raises(InvalidInputError, match="needs calibration"):
        plan_precision("int8", V10, PLAIN)


def test_graph_precision_detects_qdq_and_fp16():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    s = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    z = helper.make_tensor("z", TensorProto.INT8, [], [0])
    g = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                           helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "g", [x], [y], [s, z])
    assert GraphPrecision.of(helper.make_model(g)) == GraphPrecision(True, False)
    g2 = helper.make_graph([helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
                            helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)], "g", [x], [y])
    assert GraphPrecision.of(helper.make_model(g2)) == GraphPrecision(False, True)
