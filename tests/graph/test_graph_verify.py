"""The verifier: feeds the original model accepts, exact comparison of non-float outputs,
and the rewrites added for real-world models (issue 13), each checked on a model built here."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from trt_edge.errors import InvalidInputError
from trt_edge.graph import OptimizeOptions, optimize
from trt_edge.graph.report import initializer_bytes, op_histogram
from trt_edge.graph.verify import build_verifier, compare_value
from trt_edge.numerics import FP32_EXACT
from trt_edge.onnx_io import feed_rules, graph_inputs, parse_input_specs, parse_shapes, random_inputs
from trt_edge.ort_exec import run_model


def _model(nodes, inputs, outputs, inits=(), opset=17):
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits)),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def test_integer_inputs_get_values_their_consumers_accept():
    table = numpy_helper.from_array(np.arange(7 * 3, dtype=np.float32).reshape(7, 3), "table")
    sr = numpy_helper.from_array(np.array(16000, np.int64), "rate")
    model = _model([helper.make_node("Gather", ["table", "ids"], ["emb"]),
                    helper.make_node("CumSum", ["emb", "axis"], ["cs"]),
                    helper.make_node("Equal", ["sr", "rate"], ["is16k"]),
                    helper.make_node("Pad", ["cs", "pads"], ["y"], mode="reflect")],
                   [_vi("ids", T.INT64, ["n"]), _vi("axis", T.INT32, []), _vi("sr", T.INT64, []),
                    _vi("pads", T.INT64, [4])],
                   [_vi("y", T.FLOAT, None), _vi("is16k", T.BOOL, [])], [table, sr])
    rules = feed_rules(model)
    assert set(rules) == {"ids", "axis", "sr", "pads"}
    for seed in range(5):
        feed = random_inputs(graph_inputs(model), dim_values={"n": 6}, seed=seed, rules=rules)
        assert feed["ids"].min() >= 0 and feed["ids"].max() < 7 and feed["axis"].ndim == 0
        assert feed["sr"] == 16000 and 0 <= feed["axis"] < 2
        out = run_model(model, feed)   # the original model runs on every generated feed
        assert bool(out["is16k"])


def test_dynamic_sizes_are_retried_until_the_original_runs():
    # Reflect padding by 4 needs every padded axis longer than 4: sizes 2 and 3 fail.
    pads = numpy_helper.from_array(np.array([0, 4, 0, 4], np.int64), "pads")
    model = _model([helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")],
                   [_vi("x", T.FLOAT, ["b", "t"])], [_vi("y", T.FLOAT, None)], [pads])
    v = build_verifier(model, dim_sizes=(2, 3), shapes={}, values={}, real_inputs=(), seed=0)
    assert len(v.feeds) == 2 and all(f["x"].shape[1] > 4 for f in v.feeds)
    assert v.tried > 2


def test_model_no_generated_feed_runs_on_is_refused_with_a_fix():
    # Reshape to a fixed 7x11: no generated size fits; the error asks for real inputs or shapes.
    shape = numpy_helper.from_array(np.array([7, 11], np.int64), "shape")
    model = _model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                   [_vi("x", T.FLOAT, ["n"])], [_vi("y", T.FLOAT, [7, 11])], [shape])
    with pytest.raises(InvalidInputError, match="ORIGINAL model") as info:
        optimize(model)
    assert "--inputs" in str(info.value) and "--shapes" in str(info.value)
    assert "changed" not in str(info.value)
    out, report = optimize(model, OptimizeOptions(shapes={"x": (77,)}))
    assert report.verified and report.verification_feeds == 2


def test_non_float_outputs_compare_exactly_and_nan_matches_nan():
    tol = FP32_EXACT
    assert compare_value("s", np.array(["a", "b"], object), np.array(["a", "b"], object), tol).ok
    assert not compare_value("s", np.array(["a", "c"], object), np.array(["a", "b"], object), tol).ok
    seq = [np.arange(3), np.arange(2)]
    assert compare_value("q", list(seq), seq, tol).ok
    assert not compare_value("q", [np.arange(3)], seq, tol).ok
    assert not compare_value("q", [np.arange(3), np.arange(2) + 1], seq, tol).ok
    assert compare_value("o", None, None, tol).ok and not compare_value("o", np.zeros(1), None, tol).ok
    assert not compare_value("i", np.array([1, 2]), np.array([1, 3]), tol).ok
    assert not compare_value("i", np.array([1, 2], np.int32), np.array([1, 2], np.int64), tol).ok
    nan = np.array([np.nan, 1.0], np.float32)
    assert compare_value("f", nan.copy(), nan, tol).ok
    assert not compare_value("f", np.array([0.0, 1.0], np.float32), nan, tol).ok
    import ml_dtypes
    b = np.array([1.0, 2.0], ml_dtypes.bfloat16)
    assert compare_value("b", b.copy(), b, tol).ok
    assert not compare_value("b", (b.astype(np.float32) * 1.1).astype(ml_dtypes.bfloat16), b, tol).ok


def test_float_reassociation_allowance_is_relative_to_the_output_scale():
    ref = np.array([1.0, -0.5, 1e-7], np.float32)
    # 2e-6 error on the near-zero element (fails rtol*|b| + atol) but within rtol of the scale 1.0
    assert compare_value("y", ref + np.array([0, 0, 2e-6], np.float32), ref, FP32_EXACT).ok
    assert not compare_value("y", ref + np.array([0, 0, 5e-5], np.float32), ref, FP32_EXACT).ok


def test_parse_input_specs_scalars_values_and_negative_dims():
    specs = parse_input_specs("input:1x512,state:2x1x128,sr=16000,t:scalar,u:")
    assert specs.shapes == {"input": (1, 512), "state": (2, 1, 128), "sr": (), "t": (), "u": ()}
    assert specs.values == {"sr": 16000}
    assert parse_shapes("a:0x3") == {"a": (0, 3)}
    with pytest.raises(InvalidInputError, match=">= 0"):
        parse_shapes("x:1x-1x3")
    with pytest.raises(InvalidInputError, match="number"):
        parse_input_specs("sr=fast")


def _weight_only_int8_model(rng):
    w = rng.integers(-127, 128, (128, 64)).astype(np.int8)  # 8 KiB: a weight, not shape arithmetic
    scale = numpy_helper.from_array(np.full((1, 64), 0.02, np.float32), "scale")
    return _model([helper.make_node("Cast", ["w_q"], ["w_f"], to=T.FLOAT),
                   helper.make_node("Mul", ["w_f", "scale"], ["w"]),
                   helper.make_node("MatMul", ["x", "w"], ["y"])],
                  [_vi("x", T.FLOAT, ["n", 128])], [_vi("y", T.FLOAT, ["n", 64])],
                  [numpy_helper.from_array(w, "w_q"), scale])


def test_weight_only_quantization_is_kept_and_the_file_does_not_grow(rng):
    model = _weight_only_int8_model(rng)
    out, report = optimize(model)
    assert op_histogram(out) == op_histogram(model)
    assert initializer_bytes(out) <= initializer_bytes(model)


def test_size_threshold_limits_materialised_constants():
    shape = numpy_helper.from_array(np.array([256, 256], np.int64), "shape")
    model = _model([helper.make_node("ConstantOfShape", ["shape"], ["big"],
                                     value=numpy_helper.from_array(np.array([0.5], np.float32))),
                    helper.make_node("Add", ["x", "big"], ["y"])],
                   [_vi("x", T.FLOAT, [256, 256])], [_vi("y", T.FLOAT, [256, 256])], [shape])
    kept, _ = optimize(model, OptimizeOptions(size_threshold=1024))
    assert op_histogram(kept)["ConstantOfShape"] == 1 and initializer_bytes(kept) < 1024
    folded, _ = optimize(model, OptimizeOptions(size_threshold=None))
    assert "ConstantOfShape" not in op_histogram(folded)


def _branch(name, nodes, outputs, inits=()):
    return helper.make_graph(nodes, name, [], outputs, initializer=list(inits))


def test_constants_fold_inside_branches_and_constant_if_is_inlined():
    # then: y = x * (2 + 3), computed from Constant nodes inside the branch; the condition is
    # Equal(Shape(x)[1], 4), static once shapes are known, so the If itself goes.
    then_b = _branch("then", [helper.make_node("Constant", [], ["c2"], value=numpy_helper.from_array(np.array(2.0, np.float32))),
                              helper.make_node("Constant", [], ["c3"], value=numpy_helper.from_array(np.array(3.0, np.float32))),
                              helper.make_node("Add", ["c2", "c3"], ["c5"]),
                              helper.make_node("Mul", ["x", "c5"], ["t_out"])],
                     [_vi("t_out", T.FLOAT, ["n", 4])])
    else_b = _branch("else", [helper.make_node("Neg", ["x"], ["e_out"])], [_vi("e_out", T.FLOAT, ["n", 4])])
    idx = numpy_helper.from_array(np.array(1, np.int64), "idx")
    four = numpy_helper.from_array(np.array(4, np.int64), "four")
    model = _model([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "idx"], ["d"]),
                    helper.make_node("Equal", ["d", "four"], ["c"]),
                    helper.make_node("If", ["c"], ["y"], then_branch=then_b, else_branch=else_b)],
                   [_vi("x", T.FLOAT, ["n", 4])], [_vi("y", T.FLOAT, ["n", 4])], [idx, four])
    out, report = optimize(model)
    hist = op_histogram(out)
    assert "If" not in hist and "Constant" not in hist and hist.get("Mul") == 1, hist
    assert report.verified
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(run_model(out, {"x": x})["y"], x * 5)


def test_per_channel_mul_add_after_conv_fold_into_its_weights(rng):
    """The Caffe2 spelling of BatchNormalization (Mul + Add per channel), as in DenseNet-121."""
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    scale = numpy_helper.from_array(rng.uniform(0.5, 2, (4, 1, 1)).astype(np.float32), "scale")
    shift = numpy_helper.from_array(rng.standard_normal((1, 4, 1, 1)).astype(np.float32), "shift")
    full = numpy_helper.from_array(rng.standard_normal((4, 6, 6)).astype(np.float32), "full")
    model = _model([helper.make_node("Conv", ["x", "w"], ["c"]),
                    helper.make_node("Mul", ["c", "scale"], ["m"]),
                    helper.make_node("Add", ["shift", "m"], ["a"]),
                    helper.make_node("Conv", ["a", "w2"], ["c2"]),
                    helper.make_node("Add", ["c2", "full"], ["y"])],  # not per channel: stays
                   [_vi("x", T.FLOAT, ["n", 3, 8, 8])], [_vi("y", T.FLOAT, ["n", 4, 6, 6])],
                   [w, scale, shift, full,
                    numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "w2")])
    out, report = optimize(model)
    hist = op_histogram(out)
    assert hist == {"Conv": 2, "Add": 1}, hist
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref, got = run_model(model, {"x": x})["y"], run_model(out, {"x": x})["y"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
