"""Each built-in pass on hand-built models: the rewrite it promises, and unchanged numerics.

Numerics are checked twice: by the pipeline itself (ORT, optimisations off, after
every pass) and here independently, against onnx.reference.ReferenceEvaluator
running the *original* model, on fresh random inputs.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import graph_test_models as M
from trt_edge.graph import OptimizeOptions, optimize
from trt_edge.graph.report import op_histogram
from trt_edge.graph.passes.fold_bn import FOLD_BN_TOLERANCE
from trt_edge.numerics import FP32_EXACT, FP32_EXPORT, assert_close
from trt_edge.onnx_io import graph_inputs, random_inputs
from trt_edge.runtime.onnxrt import OrtOptions, run_onnx


def _check_same(original: onnx.ModelProto, optimized: onnx.ModelProto, feed: dict,
                tolerance=FP32_EXACT, oracle: bool = True) -> None:
    """Same kernels (ORT, optimisations off): ``tolerance``. Independent oracle
    (onnx.reference, numpy kernels, other summation order): FP32_EXPORT."""
    from onnx.reference import ReferenceEvaluator
    ort = OrtOptions(graph_optimization="disable")
    assert_close(run_onnx(optimized, feed, ort), run_onnx(original, feed, ort), tolerance,
                 "optimized vs original in ONNX Runtime")
    if oracle:
        names = [o.name for o in original.graph.output]
        ref = dict(zip(names, ReferenceEvaluator(original).run(names, feed)))
        assert_close(run_onnx(optimized, feed, ort), ref, FP32_EXPORT,
                     "optimized (ORT) vs original (onnx.reference)")
    onnx.checker.check_model(optimized, full_check=True)


def _feed(model: onnx.ModelProto, rng: np.random.Generator, **dims: int) -> dict:
    return random_inputs(graph_inputs(model), dim_values=dims, seed=int(rng.integers(1 << 31)))


def _run(model: onnx.ModelProto, passes: list[str] | None = None):
    out, report = optimize(model, OptimizeOptions(passes=passes))
    assert report.verified and report.max_abs_error is not None
    return out, report


def test_shape_with_start_end_folds_to_the_right_value(rng):
    model = M.shape_slice_model()
    out, report = _run(model)
    assert op_histogram(out) == {"Reshape": 1}          # Shape/ReduceProd/Concat all folded
    target = {t.name: onnx.numpy_helper.to_array(t) for t in out.graph.initializer}
    reshape = out.graph.node[0]
    np.testing.assert_array_equal(target[reshape.input[1]], [-1, 12])  # 3*4, not 2*3*4*5
    _check_same(model, out, _feed(model, rng))
    assert report.passes[0].name == "eliminate_identity"


def test_dynamic_dims_stay_dynamic(rng):
    model = M.dynamic_shape_model()
    out, _ = _run(model)
    hist = op_histogram(out)
    # Inference knows every output dim but the batch: the computed shape becomes [-1, 24]
    # (the batch stays dynamic: -1, not the size seen at optimization time).
    assert hist == {"Reshape": 1}
    target = next(t for t in out.graph.initializer if t.name == out.graph.node[0].input[1])
    assert onnx.numpy_helper.to_array(target).tolist() == [-1, 24]
    for batch in (1, 3, 7):
        _check_same(model, out, _feed(model, rng, batch=batch))


@pytest.mark.parametrize("transpose", [False, True])
def test_fold_bn_into_conv(rng, transpose):
    model = M.conv_bn_model(seed=int(rng.integers(100)), transpose=transpose)
    out, report = _run(model, ["fold_bn"])
    hist = op_histogram(out)
    assert "BatchNormalization" not in hist
    assert hist.get("Conv", 0) + hist.get("ConvTranspose", 0) == 2
    assert report.passes[0].stats["folded"] == 2
    assert report.tolerance == {"rtol": 1e-4, "atol": 1e-5}   # fold_bn says it rounds differently
    for n in (1, 4):
        _check_same(model, out, _feed(model, rng, N=n), FOLD_BN_TOLERANCE)


def test_fold_bn_into_gemm_with_alpha_beta(rng):
    model = M.gemm_bn_model()
    out, _ = _run(model, ["fold_bn"])
    assert op_histogram(out) == {"Gemm": 1}
    _check_same(model, out, _feed(model, rng, N=5), FOLD_BN_TOLERANCE)


def test_matmul_add_becomes_gemm_only_for_2d(rng):
    model = M.matmul_add_model()
    out, report = _run(model, ["fuse_gemm"])
    assert op_histogram(out) == {"Gemm": 1, "Relu": 1}
    assert report.passes[0].stats == {"fused": 1}
    _check_same(model, out, _feed(model, rng, N=6))
    model3 = M.matmul_add_model(rank3=True)
    out3, _ = _run(model3, ["fuse_gemm"])
    assert op_histogram(out3) == op_histogram(model3)       # 3-D activations: left for TensorRT


def test_noop_and_duplicate_elimination_keeps_interface(rng):
    model = M.noop_model()
    out, report = _run(model)
    hist = op_histogram(out)
    assert "Identity" not in hist
    assert hist["Dropout"] == 1                              # its mask is used: kept
    assert hist["Cast"] == 1                                 # bool -> float mask cast is real work
    assert hist["Mul"] == 1 and hist["Tanh"] == 1            # duplicates merged
    assert [o.name for o in out.graph.output] == ["y", "mask_f", "z"]
    assert [i.name for i in out.graph.input] == ["x"]
    first_round = {p.name: p.stats for p in report.passes if p.round == 1}
    assert first_round["eliminate_identity"]["removed_Identity"] == 3
    assert first_round["eliminate_identity"]["removed_Dropout"] == 1
    assert first_round["eliminate_identity"]["removed_Cast"] == 1
    _check_same(model, out, _feed(model, rng, N=3))


def test_control_flow_and_optional_inputs_survive(rng):
    model = M.control_flow_model()
    feeds = [{"x": rng.standard_normal((3, 4)).astype(np.float32), "cond": np.array(c)}
             for c in (True, False)]
    out, report = optimize(model, OptimizeOptions(real_inputs=feeds))
    hist = op_histogram(out)
    assert hist["If"] == 1 and hist["Loop"] == 1
    assert hist["Mul"] == 1        # kk = k*k stays: the branches read it from the outer scope
    assert hist["Identity"] == 2   # then-branch's outer-scope pass-through and the Loop cond one
    assert hist["Clip"] == 1
    clip = next(n for n in out.graph.node if n.op_type == "Clip")
    assert clip.input[1] == ""     # the omitted optional input is still omitted
    loop = next(n for n in out.graph.node if n.op_type == "Loop")
    assert loop.input[1] == ""
    for feed in feeds:
        # onnx.reference 1.23 skips a Loop whose optional cond input is omitted (returns the
        # initial value; ORT runs the 3 iterations as the spec says), so no oracle here.
        _check_same(model, out, feed, oracle=False)
        np.testing.assert_allclose(run_onnx(out, feed)["z"], np.maximum(np.minimum(feed["x"], 1), 0)
                                   + 3 * np.array([1.5, -2.0, 0.5, 3.0], np.float32) ** 2, rtol=1e-6)


def test_qdq_and_random_ops_are_never_folded():
    model = M.qdq_and_random_model()
    out, _ = optimize(model, OptimizeOptions(verify=False))  # random output: not comparable
    assert op_histogram(out) == op_histogram(model)


def test_large_constant_is_not_materialised(rng):
    model = M.big_constant_model()   # 2 MiB from a 16-byte shape
    small_limit = {"fold_constants": {"max_bytes": 1 << 20}}
    out, report = optimize(model, OptimizeOptions(passes=["fold_constants"], pass_options=small_limit))
    assert op_histogram(out)["ConstantOfShape"] == 1
    assert report.initializer_bytes_after < 1024
    assert report.passes[0].stats["kept_large"] == 1
    _check_same(model, out, _feed(model, rng))
    # Under the (default 16 MiB) limit it folds.
    out2, rep2 = _run(model, ["fold_constants"])
    assert "ConstantOfShape" not in op_histogram(out2)
    assert rep2.initializer_bytes_after == 128 * 4096 * 4


def test_ir3_initializers_as_inputs_from_caffe2_export():
    """light_squeezenet (onnx-caffe2 exporter, IR 3, opset 9) ships inside the onnx package."""
    import importlib.util
    from pathlib import Path
    path = (Path(importlib.util.find_spec("onnx").origin).parent / "backend" / "test" / "data" / "light"
            / "light_squeezenet.onnx")
    model = onnx.load(str(path))
    out, report = _run(model)
    hist_before, hist = op_histogram(model), op_histogram(out)
    assert "ConstantOfShape" not in hist and "Dropout" not in hist
    assert hist["Conv"] == hist_before["Conv"] and hist["Relu"] == hist_before["Relu"]
    assert out.ir_version == 4 and any("IR < 4" in w for w in report.warnings)
    feed = {"data_0": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    ref = run_onnx(model, feed, OrtOptions(graph_optimization="disable"))
    got = run_onnx(out, feed, OrtOptions(graph_optimization="disable"))
    assert_close(got, ref, FP32_EXACT)


def test_repeated_dynamic_dim_reads_are_unified_but_axes_kept_apart(rng):
    model = M.repeated_dim_reads_model()
    out, report = _run(model)
    hist = op_histogram(out)
    first_round = {p.name: p.stats for p in report.passes if p.round == 1}
    assert first_round["unify_dynamic_dims"]["unified"] == 1       # b2 -> b1; q (seq) stays apart
    assert first_round["simplify_shapes"]["unsqueeze_chain"] == 1
    assert hist["Gather"] == 2 and hist["Concat"] == 2 and hist["Reshape"] == 3
    assert hist["Unsqueeze"] == 3                                   # u1, u3 and the merged x chain
    for batch, seq in ((2, 5), (3, 1)):
        feed = {"x": rng.standard_normal((batch, seq, 4)).astype(np.float32)}
        _check_same(model, out, feed)


def test_merged_unsqueeze_axes_match_numpy():
    from trt_edge.graph.passes.simplify_shapes import merged_unsqueeze_axes
    for rank, a, b in [(1, [0], [0]), (1, [1], [0]), (2, [0], [-1]), (0, [0], [1]), (3, [-1], [1, 2])]:
        x = np.zeros(tuple(range(2, 2 + rank)))
        twice = np.expand_dims(np.expand_dims(x, tuple(a)), tuple(b))
        assert np.expand_dims(x, tuple(merged_unsqueeze_axes(rank, a, b))).shape == twice.shape
    assert merged_unsqueeze_axes(1, [0, 0], [0]) is None             # duplicate axes: not merged
