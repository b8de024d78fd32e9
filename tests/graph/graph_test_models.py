"""Hand-built ONNX models exercising what exporters produce and passes must respect.

Each builder returns a ModelProto that passes ``onnx.checker.check_model(full_check=True)``.
Weights are random (a fixed seed per builder, so a failure reproduces), never all-equal,
so a wrong rewrite shows up numerically.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

OPSET = 17


def _model(nodes, inputs, outputs, inits=(), opset=OPSET, ir=None) -> onnx.ModelProto:
    g = h.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)], producer_name="tests.graph")
    if ir is not None:
        m.ir_version = ir
    else:
        m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def shape_slice_model() -> onnx.ModelProto:
    """y = Reshape(x, [-1, prod(Shape(x, start=1, end=3))]): static dims, Shape with start/end.

    onnx-graphsurgeon 0.6.1's folding of Shape ignores start/end; ours must not.
    """
    x = h.make_tensor_value_info("x", T.FLOAT, [2, 3, 4, 5])
    y = h.make_tensor_value_info("y", T.FLOAT, [None, None])
    nodes = [
        h.make_node("Shape", ["x"], ["s"], start=1, end=3),
        h.make_node("ReduceProd", ["s"], ["p"], keepdims=1),
        h.make_node("Constant", [], ["minus1"], value=nh.from_array(np.array([-1], np.int64))),
        h.make_node("Concat", ["minus1", "p"], ["target"], axis=0),
        h.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    return _model(nodes, [x], [y])


def dynamic_shape_model() -> onnx.ModelProto:
    """x[batch, 6, 4] -> Reshape(x, [Shape(x)[0], 24]): the batch dim must stay dynamic."""
    x = h.make_tensor_value_info("x", T.FLOAT, ["batch", 6, 4])
    y = h.make_tensor_value_info("y", T.FLOAT, ["batch", 24])
    c = lambda name, v: h.make_node("Constant", [], [name], value=nh.from_array(np.array(v, np.int64)))  # noqa: E731
    nodes = [
        h.make_node("Shape", ["x"], ["s"]),
        c("i0", 0), c("i1", 1), c("i2", 2), c("ax0", [0]),
        h.make_node("Gather", ["s", "i0"], ["b"], axis=0),
        h.make_node("Gather", ["s", "i1"], ["d1"], axis=0),
        h.make_node("Gather", ["s", "i2"], ["d2"], axis=0),
        h.make_node("Mul", ["d1", "d2"], ["f"]),
        h.make_node("Unsqueeze", ["b", "ax0"], ["bu"]),
        h.make_node("Unsqueeze", ["f", "ax0"], ["fu"]),
        h.make_node("Concat", ["bu", "fu"], ["target"], axis=0),
        h.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    return _model(nodes, [x], [y])


def conv_bn_model(seed: int = 0, transpose: bool = False) -> onnx.ModelProto:
    """x[N,4,8,8] -> Conv(or ConvTranspose, bias) -> BN -> Relu -> Conv(no bias) -> BN -> y."""
    rng = np.random.default_rng(seed)
    x = h.make_tensor_value_info("x", T.FLOAT, ["N", 4, 8, 8])
    y = h.make_tensor_value_info("y", T.FLOAT, [None] * 4)
    inits = []

    def bn_params(prefix: str, c: int) -> list[str]:
        vals = {"scale": rng.uniform(0.5, 2.0, c), "bias": rng.normal(0, 0.5, c),
                "mean": rng.normal(0, 0.5, c), "var": rng.uniform(0.1, 3.0, c)}
        for k, v in vals.items():
            inits.append(nh.from_array(v.astype(np.float32), f"{prefix}_{k}"))
        return [f"{prefix}_{k}" for k in vals]

    if transpose:
        w1 = rng.normal(0, 0.3, (4, 6, 3, 3)).astype(np.float32)  # [C_in, C_out, k, k]
        first = h.make_node("ConvTranspose", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1])
    else:
        w1 = rng.normal(0, 0.3, (6, 4, 3, 3)).astype(np.float32)
        first = h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1])
    inits += [nh.from_array(w1, "w1"), nh.from_array(rng.normal(0, 0.1, 6).astype(np.float32), "b1"),
              nh.from_array(rng.normal(0, 0.3, (5, 6, 1, 1)).astype(np.float32), "w2")]
    nodes = [
        first,
        h.make_node("BatchNormalization", ["c1", *bn_params("bn1", 6)], ["n1"], epsilon=1e-3),
        h.make_node("Relu", ["n1"], ["r1"]),
        h.make_node("Conv", ["r1", "w2"], ["c2"]),
        h.make_node("BatchNormalization", ["c2", *bn_params("bn2", 5)], ["y"]),
    ]
    return _model(nodes, [x], [y], inits)


def gemm_bn_model(seed: int = 1) -> onnx.ModelProto:
    """x[N,16] -> Gemm(transB=1, alpha, beta) -> BN (2-D) -> y."""
    rng = np.random.default_rng(seed)
    x = h.make_tensor_value_info("x", T.FLOAT, ["N", 16])
    y = h.make_tensor_value_info("y", T.FLOAT, ["N", 8])
    inits = [nh.from_array(rng.normal(0, 0.3, (8, 16)).astype(np.float32), "w"),
             nh.from_array(rng.normal(0, 0.3, (8,)).astype(np.float32), "c"),
             nh.from_array(rng.uniform(0.5, 2, 8).astype(np.float32), "g"),
             nh.from_array(rng.normal(0, 0.3, 8).astype(np.float32), "b"),
             nh.from_array(rng.normal(0, 0.3, 8).astype(np.float32), "m"),
             nh.from_array(rng.uniform(0.2, 2, 8).astype(np.float32), "v")]
    nodes = [h.make_node("Gemm", ["x", "w", "c"], ["t"], transB=1, alpha=0.7, beta=1.3),
             h.make_node("BatchNormalization", ["t", "g", "b", "m", "v"], ["y"])]
    return _model(nodes, [x], [y], inits)


def matmul_add_model(rank3: bool = False, seed: int = 2) -> onnx.ModelProto:
    """x[N,16] (or [N,S,16]) -> MatMul(W[16,8]) -> Add(b[8]) -> Relu -> y."""
    rng = np.random.default_rng(seed)
    shape = ["N", "S", 16] if rank3 else ["N", 16]
    x = h.make_tensor_value_info("x", T.FLOAT, shape)
    y = h.make_tensor_value_info("y", T.FLOAT, [None] * len(shape))
    inits = [nh.from_array(rng.normal(0, 0.3, (16, 8)).astype(np.float32), "w"),
             nh.from_array(rng.normal(0, 0.3, (8,)).astype(np.float32), "b")]
    nodes = [h.make_node("MatMul", ["x", "w"], ["mm"]), h.make_node("Add", ["b", "mm"], ["a"]),
             h.make_node("Relu", ["a"], ["y"])]
    return _model(nodes, [x], [y], inits)


def noop_model() -> onnx.ModelProto:
    """Identity chains (one ending at a graph output), inference Dropout, same-type Cast,
    a Dropout whose mask is used (must stay), and duplicated subexpressions."""
    x = h.make_tensor_value_info("x", T.FLOAT, ["N", 8])
    outs = [h.make_tensor_value_info(n, T.FLOAT, [None, None]) for n in ("y", "mask_f", "z")]
    inits = [nh.from_array(np.array(0.25, np.float32), "ratio"),
             nh.from_array(np.array(False), "training"),
             nh.from_array(np.array([2.0], np.float32), "two_a"),
             nh.from_array(np.array([2.0], np.float32), "two_b")]
    nodes = [
        h.make_node("Identity", ["x"], ["i1"]),
        h.make_node("Dropout", ["i1", "ratio", "training"], ["d1"]),
        h.make_node("Cast", ["d1"], ["c1"], to=T.FLOAT),
        h.make_node("Mul", ["c1", "two_a"], ["m1"]),
        h.make_node("Mul", ["c1", "two_b"], ["m2"]),      # same as m1 once constants are shared
        h.make_node("Tanh", ["m1"], ["t1"]),
        h.make_node("Tanh", ["m2"], ["t2"]),
        h.make_node("Add", ["t1", "t2"], ["s"]),
        h.make_node("Identity", ["s"], ["y"]),            # Identity feeding a graph output
        h.make_node("Dropout", ["x"], ["dx", "mask"]),    # mask used: Dropout stays
        h.make_node("Cast", ["mask"], ["mask_f"], to=T.FLOAT),
        h.make_node("Identity", ["dx"], ["z"]),
    ]
    return _model(nodes, [x], outs, inits)


def control_flow_model() -> onnx.ModelProto:
    """If and Loop with outer-scope references to foldable tensors, plus omitted optional inputs."""
    x = h.make_tensor_value_info("x", T.FLOAT, ["N", 4])
    cond = h.make_tensor_value_info("cond", T.BOOL, [])
    y = h.make_tensor_value_info("y", T.FLOAT, [None, None])
    z = h.make_tensor_value_info("z", T.FLOAT, [None, None])
    inits = [nh.from_array(np.array([1.5, -2.0, 0.5, 3.0], np.float32), "k"),
             nh.from_array(np.array(3, np.int64), "trip"),
             nh.from_array(np.array(1.0, np.float32), "cmax")]
    # Branches read 'kk' and 'xr' from the outer scope; 'kk' is computable from constants.
    # The then-branch returns an outer tensor through an Identity (exporters do this).
    then_g = h.make_graph([h.make_node("Identity", ["xr"], ["then_out"])], "then", [],
                          [h.make_tensor_value_info("then_out", T.FLOAT, [None, None])])
    else_g = h.make_graph([h.make_node("Identity", ["xr"], ["else_id"]),
                           h.make_node("Sub", ["else_id", "kk"], ["else_out"])], "else", [],
                          [h.make_tensor_value_info("else_out", T.FLOAT, [None, None])])
    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"]),
         h.make_node("Add", ["acc_in", "kk"], ["acc_sum"]),
         h.make_node("Identity", ["acc_sum"], ["acc_out"])],
        "body",
        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
         h.make_tensor_value_info("acc_in", T.FLOAT, [None, None])],
        [h.make_tensor_value_info("cond_out", T.BOOL, []), h.make_tensor_value_info("acc_out", T.FLOAT, [None, None])])
    nodes = [
        h.make_node("Identity", ["k"], ["k_id"]),
        h.make_node("Mul", ["k_id", "k_id"], ["kk"]),          # constant subgraph read by the branches
        h.make_node("Clip", ["x", "", "cmax"], ["xc"]),        # omitted optional input (min)
        h.make_node("Relu", ["xc"], ["xr"]),
        h.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
        h.make_node("Loop", ["trip", "", "xr"], ["z"], body=body),  # omitted optional cond
    ]
    return _model(nodes, [x, cond], [y, z], inits)


def qdq_and_random_model() -> onnx.ModelProto:
    """DequantizeLinear of int8 weights (must stay for TensorRT) and a RandomUniformLike (never folded)."""
    rng = np.random.default_rng(3)
    x = h.make_tensor_value_info("x", T.FLOAT, ["N", 8])
    y = h.make_tensor_value_info("y", T.FLOAT, [None, None])
    r = h.make_tensor_value_info("r_shape", T.INT64, [None])
    inits = [nh.from_array(rng.integers(-127, 127, (8, 4)).astype(np.int8), "wq"),
             nh.from_array(np.array(0.02, np.float32), "ws"),
             nh.from_array(np.zeros((2, 3), np.float32), "zeros")]
    nodes = [h.make_node("DequantizeLinear", ["wq", "ws"], ["w"]),
             h.make_node("MatMul", ["x", "w"], ["y"]),
             h.make_node("RandomUniformLike", ["zeros"], ["rnd"]),
             h.make_node("Shape", ["rnd"], ["r_shape"])]
    return _model(nodes, [x], [y, r], inits)


def big_constant_model() -> onnx.ModelProto:
    """ConstantOfShape producing 2 MiB from a 16-byte shape: folding it would bloat the file."""
    x = h.make_tensor_value_info("x", T.FLOAT, [1, 4096])
    y = h.make_tensor_value_info("y", T.FLOAT, [None, None])
    inits = [nh.from_array(np.array([128, 4096], np.int64), "shape")]
    nodes = [h.make_node("ConstantOfShape", ["shape"], ["big"],
                         value=nh.from_array(np.array([0.5], np.float32))),
             h.make_node("Add", ["x", "big"], ["y"])]
    return _model(nodes, [x], [y], inits)


def repeated_dim_reads_model() -> onnx.ModelProto:
    """Two activations re-read batch (same symbol) and one reads seq (another symbol), as exporters do.

    y1 = Reshape(h1, [batch, -1]), y2 = Reshape(h2, [batch, -1]), y3 = Reshape(h2, [seq, -1]);
    then Unsqueeze(Unsqueeze(x)) chained.
    """
    x = h.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", 4])
    outs = [h.make_tensor_value_info(n, T.FLOAT, [None, None]) for n in ("y1", "y2", "y3")]
    outs.append(h.make_tensor_value_info("y4", T.FLOAT, [None] * 5))
    inits = [nh.from_array(np.array(0, np.int64), "i0"), nh.from_array(np.array(1, np.int64), "i1"),
             nh.from_array(np.array([0], np.int64), "ax0"), nh.from_array(np.array([-1], np.int64), "m1"),
             nh.from_array(np.array([-1], np.int64), "axm1")]
    nodes = [
        h.make_node("Relu", ["x"], ["h1"]), h.make_node("Tanh", ["h1"], ["h2"]),
        h.make_node("Shape", ["h1"], ["s1"]), h.make_node("Shape", ["h2"], ["s2"]),
        h.make_node("Gather", ["s1", "i0"], ["b1"]), h.make_node("Gather", ["s2", "i0"], ["b2"]),
        h.make_node("Gather", ["s2", "i1"], ["q"]),
        h.make_node("Unsqueeze", ["b1", "ax0"], ["u1"]), h.make_node("Unsqueeze", ["b2", "ax0"], ["u2"]),
        h.make_node("Unsqueeze", ["q", "ax0"], ["u3"]),
        h.make_node("Concat", ["u1", "m1"], ["t1"], axis=0), h.make_node("Concat", ["u2", "m1"], ["t2"], axis=0),
        h.make_node("Concat", ["u3", "m1"], ["t3"], axis=0),
        h.make_node("Reshape", ["h1", "t1"], ["y1"]), h.make_node("Reshape", ["h2", "t2"], ["y2"]),
        h.make_node("Reshape", ["h2", "t3"], ["y3"]),
        h.make_node("Unsqueeze", ["x", "ax0"], ["x1"]), h.make_node("Unsqueeze", ["x1", "axm1"], ["y4"]),
    ]
    return _model(nodes, [x], outs, inits)
