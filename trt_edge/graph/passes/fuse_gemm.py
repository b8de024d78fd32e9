"""MatMul + Add -> Gemm where that is one fused op for both TensorRT and ONNX Runtime.

Only for a 2-D activation, a constant 2-D weight and a constant bias that
broadcasts along the rows: TensorRT's ONNX parser maps such a Gemm to one
matrix multiply with a fused bias, and ORT runs one kernel instead of two.
MatMuls on 3-D+ activations (transformer layers) are left alone: a Gemm
there would need Reshape nodes around it, and TensorRT fuses MatMul+Add by
itself in that case.

Numerics: ORT's Gemm adds the bias into the accumulator rather than after
rounding the product, so results may differ by one float32 rounding of the
output (well inside rtol 1e-5 / atol 1e-6 for normal magnitudes).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..registry import PassContext, register_pass
from ._common import constant_value, is_constant, is_default_domain, protected_names
from .simplify_shapes import inferred_shapes

log = logging.getLogger(__name__)

_GEMM_DTYPES = {np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)}


@register_pass("fuse_gemm", order=50)
def fuse_gemm(graph: Any, ctx: PassContext) -> Any:
    """Fuse MatMul(A[M,K], W[K,N] const) + Add(bias[N] or [1,N] const) into one Gemm.

    The Add's output tensor keeps its name; nothing else changes.
    """
    protected = protected_names(graph, ctx)
    shapes = inferred_shapes(graph, ctx.shapes_inferred)
    fused = 0
    for mm in list(graph.nodes):
        if mm.op != "MatMul" or not is_default_domain(mm) or len(mm.inputs) != 2:
            continue
        a, w = mm.inputs
        y = mm.outputs[0]
        if not is_constant(w) or y.name in protected or len(y.outputs) != 1:
            continue
        a_dims = shapes.get(a.name)
        wv = constant_value(w)
        if a_dims is None or len(a_dims) != 2 or wv.ndim != 2 or wv.dtype not in _GEMM_DTYPES:
            continue
        add = y.outputs[0]
        if add.op != "Add" or not is_default_domain(add) or len(add.inputs) != 2:
            continue
        bias = add.inputs[1] if add.inputs[0] is y else add.inputs[0]
        if bias is y or not is_constant(bias):
            continue
        bv = constant_value(bias)
        n = wv.shape[1]
        if bv.dtype != wv.dtype or bv.shape not in ((n,), (1, n)):
            continue
        out = add.outputs[0]
        add.outputs.clear()
        add.inputs.clear()
        mm.op = "Gemm"
        mm.attrs = {}
        mm.inputs.append(bias)
        mm.outputs[0] = out
        fused += 1
    graph.cleanup(remove_unused_graph_inputs=False, recurse_subgraphs=False).toposort()
    ctx.record("fuse_gemm", fused=fused)
    return graph
