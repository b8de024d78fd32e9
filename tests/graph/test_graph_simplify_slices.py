"""simplify_slices: full-range Slices disappear, chains on disjoint axes merge; values identical."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("onnx_graphsurgeon")
pytest.importorskip("onnxruntime")

from trt_edge.graph.pipeline import OptimizeOptions, optimize  # noqa: E402
from trt_edge.ort_exec import run_model  # noqa: E402

BIG = np.iinfo(np.int64).max


def _slice(name, src, starts, ends, axes, steps, inits):
    names = [f"{name}_{k}" for k in ("s", "e", "a", "t")]
    for n, v in zip(names, (starts, ends, axes, steps)):
        inits.append(numpy_helper.from_array(np.array(v, np.int64), n))
    return helper.make_node("Slice", [src, *names], [f"{name}_out"], name=name)


def _model() -> onnx.ModelProto:
    inits: list = []
    nodes = [
        _slice("full", "x", [0], [BIG], [0], [1], inits),             # keeps everything
        _slice("rows", "full_out", [0], [3], [1], [1], inits),        # x[:, :3]
        _slice("every2", "rows_out", [0], [BIG], [-1], [2], inits),   # [..., ::2] (negative axis)
        _slice("tail", "full_out", [3], [BIG], [1], [1], inits),      # a second reader of "full"
        _slice("same_axis", "tail_out", [1], [BIG], [1], [1], inits), # same axis: must not merge
    ]
    nodes += [helper.make_node("Identity", ["every2_out"], ["a"]),
              helper.make_node("Identity", ["same_axis_out"], ["b"])]
    g = helper.make_graph(nodes, "slices", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, 8])],
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3, 4]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 2, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_noop_removed_chain_merged_same_axis_kept():
    model = _model()
    out, report = optimize(model, OptimizeOptions(passes=["simplify_slices", "eliminate_identity",
                                                          "eliminate_dead"]))
    slices = [n for n in out.graph.node if n.op_type == "Slice"]
    # "full" is gone; rows+every2 became one Slice over axes (1, 2); tail and same_axis stay two
    assert len(slices) == 3, [n.name for n in slices]
    merged = next(n for n in slices if n.name == "every2")
    axes = next(numpy_helper.to_array(i) for i in out.graph.initializer if i.name == merged.input[3])
    assert sorted(axes.tolist()) == [1, 2]
    x = np.random.default_rng(0).standard_normal((2, 6, 8), dtype=np.float32)
    want, got = run_model(model, {"x": x}), run_model(out, {"x": x})
    np.testing.assert_array_equal(got["a"], x[:, :3, ::2])
    np.testing.assert_array_equal(got["b"], want["b"])
