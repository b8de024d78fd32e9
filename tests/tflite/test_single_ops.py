"""Converters of operators MediaPipe's models do not use, each checked against LiteRT.

Every case starts with a 1x1 CONV_2D so the tensor under test is NCHW inside the ONNX graph:
the layout bookkeeping (axes, perms, paddings, broadcast constants) is what is checked.
"""
from __future__ import annotations

import numpy as np
import pytest
from tflite_builder import Op, build

from trt_edge.tflite import import_tflite

RNG = np.random.default_rng(0)
X = (1, 4, 5, 6)  # NHWC activation after the head conv


def f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def i32(*values: int) -> np.ndarray:
    return np.asarray(values, np.int32)


def head(out: str = "h", cin: int = 3, cout: int = 6) -> Op:
    return Op("CONV_2D", ["x", f32(cout, 1, 1, cin), f32(cout)], out, (1, 4, 5, cout),
              ("Conv2DOptions", {"padding": 1, "strideW": 1, "strideH": 1, "dilationWFactor": 1,
                                 "dilationHFactor": 1}))


CASES = {
    "softmax_beta": [head(), Op("SOFTMAX", ["h"], "y", X, ("SoftmaxOptions", {"beta": 0.5}))],
    "transpose": [head(), Op("TRANSPOSE", ["h", i32(0, 3, 1, 2)], "y", (1, 6, 4, 5))],
    "strided_slice_shrink": [head(), Op("STRIDED_SLICE", ["h", i32(0, 1, 0, 0), i32(1, 4, 5, 6), i32(1, 2, 1, 2)],
                                        "y", (2, 5, 3), ("StridedSliceOptions", {"shrinkAxisMask": 1, "endMask": 8}))],
    "slice": [head(), Op("SLICE", ["h", i32(0, 1, 1, 0), i32(1, 2, -1, 3)], "y", (1, 2, 4, 3))],
    "mean_h_no_keepdims": [head(), Op("MEAN", ["h", i32(1)], "y", (1, 5, 6), ("ReducerOptions", {"keepDims": False}))],
    "sum_hw_keepdims": [head(), Op("SUM", ["h", i32(1, 2)], "y", (1, 1, 1, 6), ("ReducerOptions", {"keepDims": True}))],
    "reduce_max_c": [head(), Op("REDUCE_MAX", ["h", i32(3)], "y", (1, 4, 5), ("ReducerOptions", {"keepDims": False}))],
    "concat_channels": [head("a"), head("b", cout=2),
                        Op("CONCATENATION", ["a", "b"], "y", (1, 4, 5, 8), ("ConcatenationOptions", {"axis": -1}))],
    "binary_broadcast": [head(), Op("SUB", ["h", f32(6)], "s", X, ("SubOptions", {})),
                         Op("MAXIMUM", ["s", f32(1, 1, 5, 6)], "m", X),
                         Op("MINIMUM", ["m", f32(6)], "n", X),
                         Op("SQUARED_DIFFERENCE", ["n", "h"], "q", X),
                         Op("DIV", ["q", np.abs(f32(6)) + 0.5], "y", X, ("DivOptions", {}))],
    "unary_chain": [head(), Op("TANH", ["h"], "t", X), Op("LEAKY_RELU", ["t"], "l", X, ("LeakyReluOptions", {"alpha": 0.2})),
                    Op("RELU6", ["l"], "r", X), Op("EXP", ["r"], "e", X), Op("RSQRT", ["e"], "y", X)],
    "resize_nearest_half_pixel": [head(), Op("RESIZE_NEAREST_NEIGHBOR", ["h", i32(8, 10)], "y", (1, 8, 10, 6),
                                             ("ResizeNearestNeighborOptions", {"halfPixelCenters": True}))],
    "resize_nearest_align": [head(), Op("RESIZE_NEAREST_NEIGHBOR", ["h", i32(7, 9)], "y", (1, 7, 9, 6),
                                        ("ResizeNearestNeighborOptions", {"alignCorners": True}))],
    "resize_bilinear_align": [head(), Op("RESIZE_BILINEAR", ["h", i32(7, 9)], "y", (1, 7, 9, 6),
                                         ("ResizeBilinearOptions", {"alignCorners": True}))],
    "resize_bilinear_plain": [head(), Op("RESIZE_BILINEAR", ["h", i32(8, 10)], "y", (1, 8, 10, 6),
                                         ("ResizeBilinearOptions", {}))],
    "depth_space": [head(cout=8), Op("DEPTH_TO_SPACE", ["h"], "d", (1, 8, 10, 2), ("DepthToSpaceOptions", {"blockSize": 2})),
                    Op("SPACE_TO_DEPTH", ["d"], "y", (1, 4, 5, 8), ("SpaceToDepthOptions", {"blockSize": 2}))],
    "transpose_conv_same_s2": [head(), Op("TRANSPOSE_CONV", [i32(1, 8, 10, 3), f32(3, 3, 3, 6), "h"], "y", (1, 8, 10, 3),
                                          ("TransposeConvOptions", {"padding": 0, "strideW": 2, "strideH": 2}))],
    "pools_same": [head(), Op("AVERAGE_POOL_2D", ["h"], "a", (1, 2, 3, 6),
                              ("Pool2DOptions", {"padding": 0, "strideW": 2, "strideH": 2, "filterWidth": 3, "filterHeight": 3})),
                   Op("MAX_POOL_2D", ["a"], "y", (1, 1, 2, 6),
                      ("Pool2DOptions", {"padding": 0, "strideW": 2, "strideH": 2, "filterWidth": 2, "filterHeight": 2}))],
    "fully_connected_4d": [head(), Op("FULLY_CONNECTED", ["h", f32(7, 120), f32(7)], "y", (1, 7),
                                      ("FullyConnectedOptions", {"fusedActivationFunction": 1}))],
    "split_channels": [head(), Op("SPLIT", [i32(3), "h"], "y", (1, 4, 5, 3), ("SplitOptions", {"numSplits": 2}),
                                  extra_outputs=[("y2", (1, 4, 5, 3))])],
    "mirror_pad_reflect": [head(), Op("MIRROR_PAD", ["h", i32(0, 0, 1, 1, 2, 2, 0, 0).reshape(4, 2)], "y", (1, 6, 9, 6),
                                      ("MirrorPadOptions", {"mode": 0}))],
    "reshape_pack": [head(), Op("RESHAPE", ["h", i32(20, 6)], "r", (20, 6)),
                     Op("PACK", ["r", "r"], "y", (20, 2, 6), ("PackOptions", {"valuesCount": 2, "axis": 1}))],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_operator_matches_litert(case, tmp_path, mp_models):  # mp_models: skip without the extra
    ops = CASES[case]
    outputs = [ops[-1].output] + [n for n, _ in ops[-1].extra_outputs]
    path = tmp_path / f"{case}.tflite"
    path.write_bytes(build({"x": (1, 4, 5, 3)}, ops, outputs))
    res = import_tflite(path, None)
    assert res.verified, case
    kinds = set(res.tflite_ops)
    assert ops[-1].name in kinds


def test_a_wrong_conversion_is_caught_and_nothing_is_written(tmp_path, mp_models, monkeypatch):
    """The check against LiteRT can fail: a converter that softmaxes the wrong axis is refused."""
    from trt_edge.errors import VerificationError
    from trt_edge.tflite import converter as conv

    def wrong_softmax(e, op):
        out = e.node("Softmax", [e.get(op.inputs[0], conv.NATIVE)], "bad", axis=1)[0]
        e.emit(op, op.outputs[0], out, conv.NATIVE)

    monkeypatch.setitem(conv.CONVERTERS, "SOFTMAX", wrong_softmax)
    path = tmp_path / "softmax.tflite"
    path.write_bytes(build({"x": (1, 4, 5, 3)}, CASES["softmax_beta"], ["y"]))
    with pytest.raises(VerificationError, match="disagrees with LiteRT"):
        import_tflite(path, tmp_path / "softmax.onnx")
    assert not (tmp_path / "softmax.onnx").exists()


def test_block_sparse_densify_matches_litert(tmp_path, mp_models):
    """DENSIFY with 2x2 blocks in block-CSR (MediaPipe's models use plain CSR only): LiteRT is the oracle."""
    from tflite_builder import Const
    dense = np.zeros((4, 6), np.float32)
    blocks = {(0, 1): f32(2, 2), (1, 0): f32(2, 2), (1, 2): f32(2, 2)}  # (block row, block col)
    for (r, c), v in blocks.items():
        dense[2 * r:2 * r + 2, 2 * c:2 * c + 2] = v
    values = np.concatenate([blocks[k].reshape(-1) for k in sorted(blocks)])
    sparsity = ([0, 1, 2, 3], [0, 1], [("dense", 2), ("csr", [0, 1, 3], [1, 0, 2]), ("dense", 2), ("dense", 2)])
    ops = [Op("DENSIFY", [Const(values, sparsity=sparsity, dense_shape=(4, 6))], "w", (4, 6)),
           Op("ADD", ["x", "w"], "y", (4, 6), ("AddOptions", {}))]
    path = tmp_path / "block_sparse.tflite"
    path.write_bytes(build({"x": (4, 6)}, ops, ["y"]))
    res = import_tflite(path, None)
    assert res.verified
    from trt_edge.tflite.reader import read_model
    np.testing.assert_array_equal(read_model(path).tensors[1].data, dense)
