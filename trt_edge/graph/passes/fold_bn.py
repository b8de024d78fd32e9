"""Fold inference-mode BatchNormalization, and per-channel Mul/Add/Sub by constants, into the
preceding Conv / ConvTranspose / Gemm.

``BN(y) = (y - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)`` is an
affine map per output channel, so it merges into the weights and bias of a
linear producer: ``W' = W * s`` (per output channel), ``b' = (b - mean) * s +
beta``. The new parameters are computed in float64 and rounded once to the
weight dtype. TensorRT fuses Conv+BN itself, but folding also removes a node
per layer for ONNX Runtime and for every other consumer of the file.

Caffe2-era models (DenseNet-121, Inception v2 in ``onnx``'s backend test data)
spell BatchNormalization as ``Mul`` by a per-channel scale and ``Add`` of a
per-channel shift; those fold the same way (``s = c`` or ``t = c``), and so does an
``Add`` of a constant between the producer and a BatchNormalization (PP-OCR's
ConvTranspose + Add + BN). Only constants that vary along the channel axis alone
(every other axis 1, rank no larger than the output's) fold: anything else would
change the output's shape.

Numerics: ``conv(x, W * s)`` rounds differently from ``conv(x, W) * s`` (the
products are rounded at another point; sums are not reordered). The error is
a few float32 ULPs of the accumulated terms, not of the (possibly near-zero)
output, so on random O(1) data it reaches ~1x the rtol 1e-5 / atol 1e-6
allowance. The pass therefore declares ``FOLD_BN_TOLERANCE`` (rtol 1e-4, atol
1e-5, the same as torch-vs-ORT export checks); the pipeline verifies with it
from this pass on, and says so in the report.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ...numerics import Tolerance
from ..registry import PassContext, register_pass
from ._common import (constant_value, gs_module, is_constant, is_default_domain, is_empty,
                      protected_names, unique_name)

log = logging.getLogger(__name__)

FOLD_BN_TOLERANCE = Tolerance(rtol=1e-4, atol=1e-5)


def _bn_params(bn: Any, opset: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale s, shift t) with BN(y) = y * s + t per channel, or None when BN is not foldable."""
    if len(bn.inputs) < 5 or not all(is_constant(t) for t in bn.inputs[1:5]):
        return None
    if int(bn.attrs.get("training_mode", 0)) != 0 or int(bn.attrs.get("spatial", 1)) != 1:
        return None
    if opset < 7 and not int(bn.attrs.get("is_test", 0)):
        return None
    # Running-stat outputs (training only) must be absent or unused.
    if any(len(t.outputs) for t in bn.outputs[1:] if not is_empty(t)):
        return None
    gamma, beta, mean, var = (constant_value(t).astype(np.float64) for t in bn.inputs[1:5])
    eps = float(bn.attrs.get("epsilon", 1e-5))
    s = gamma / np.sqrt(var + eps)
    return s, beta - mean * s


def _affine_params(node: Any, prod_out: Any, rank: int, channel_axis: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(s, t) with node(y) = y * s + t per channel, for Mul/Add/Sub of a per-channel constant."""
    if len(node.inputs) != 2:
        return None
    if node.inputs[0] is prod_out and is_constant(node.inputs[1]):
        c_t = node.inputs[1]
    elif node.inputs[1] is prod_out and is_constant(node.inputs[0]) and node.op != "Sub":
        c_t = node.inputs[0]
    else:
        return None
    c = constant_value(c_t)
    if c.dtype.kind != "f" or c.ndim > rank or c.size == 0:
        return None
    cc = c.reshape((1,) * (rank - c.ndim) + c.shape)
    shape: tuple[int, ...] = tuple(int(n) for n in np.shape(cc))
    if any(n != 1 for ax, n in enumerate(shape) if ax != channel_axis % rank):
        return None
    vec = cc.reshape(-1).astype(np.float64)
    if node.op == "Mul":
        return vec, np.zeros_like(vec)
    if node.op == "Add":
        return np.ones_like(vec), vec
    return np.ones_like(vec), -vec  # Sub: y - c


def _fold_into_conv(conv: Any, s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    w = constant_value(conv.inputs[1])
    channels = w.shape[0] if conv.op == "Conv" else None
    if conv.op == "ConvTranspose":
        group = int(conv.attrs.get("group", 1))
        if group != 1:
            return None  # weight layout [C_in, C_out/group, ...]: per-group scaling not handled
        channels = w.shape[1]
    if channels is None or s.shape not in ((channels,), (1,)):
        return None
    s_full = np.broadcast_to(s, (channels,))
    t_full = np.broadcast_to(t, (channels,))
    shape = [1] * w.ndim
    shape[0 if conv.op == "Conv" else 1] = channels
    w_new = (w.astype(np.float64) * s_full.reshape(shape)).astype(w.dtype)
    has_bias = len(conv.inputs) > 2 and not is_empty(conv.inputs[2])
    b = constant_value(conv.inputs[2]).astype(np.float64) if has_bias else np.zeros(channels)
    b_new = (b * s_full + t_full).astype(w.dtype)
    return w_new, b_new


def _fold_into_gemm(gemm: Any, s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    b = constant_value(gemm.inputs[1]).astype(np.float64)
    if b.ndim != 2 or int(gemm.attrs.get("transA", 0)) not in (0, 1):
        return None
    trans_b = int(gemm.attrs.get("transB", 0))
    m = b.shape[0] if trans_b else b.shape[1]
    if s.shape not in ((m,), (1,)):
        return None
    s_full = np.broadcast_to(s, (m,))
    alpha = float(gemm.attrs.get("alpha", 1.0))
    beta = float(gemm.attrs.get("beta", 1.0))
    # Y = alpha * A @ B + beta * C  ->  BN(Y) = A @ (alpha * B * s) + (beta * C * s + t)
    b_new = b * alpha * (s_full[:, None] if trans_b else s_full[None, :])
    has_c = len(gemm.inputs) > 2 and not is_empty(gemm.inputs[2])
    c = constant_value(gemm.inputs[2]).astype(np.float64) * beta if has_c else np.zeros(m)
    if c.ndim > 1 and c.shape[-1] not in (1, m):
        return None
    c_new = c * s_full + np.broadcast_to(t, (m,))
    dtype = constant_value(gemm.inputs[1]).dtype
    return b_new.astype(dtype), c_new.astype(dtype)


@register_pass("fold_bn", order=40, tolerance=FOLD_BN_TOLERANCE)
def fold_bn(graph: Any, ctx: PassContext) -> Any:
    """Fold BatchNormalization (inference mode, constant statistics) into a preceding Conv, ConvTranspose or Gemm.

    Only when the producer's weights are constants, its output feeds the BN
    alone and is not protected. The BN's output tensor keeps its name.
    """
    gs = gs_module()
    protected = protected_names(graph, ctx)
    folded = {"Conv": 0, "ConvTranspose": 0, "Gemm": 0}
    affine = 0
    changed = True
    while changed:  # Mul then Add (or Add then BN) fold one after the other
        changed = False
        for bn in list(graph.nodes):
            if bn.op not in ("BatchNormalization", "Mul", "Add", "Sub") or not is_default_domain(bn) \
                    or not bn.inputs or not bn.outputs:
                continue
            y = next((t for t in bn.inputs[:2] if len(t.inputs) and t.inputs[0].op in folded), None) \
                if bn.op != "BatchNormalization" else bn.inputs[0]
            if y is None:
                continue
            if _fold_one(graph, gs, bn, y, protected, folded, ctx.opset):
                changed = True
                affine += int(bn.op != "BatchNormalization")
    graph.cleanup(remove_unused_graph_inputs=False, recurse_subgraphs=False).toposort()
    ctx.record("fold_bn", **{f"into_{k.lower()}": v for k, v in folded.items()},
               folded=sum(folded.values()), affine=affine)
    return graph


def _fold_one(graph: Any, gs: Any, bn: Any, y: Any, protected: set[str], folded: dict[str, int],
              opset: int) -> bool:
    """Fold ``bn`` (BatchNormalization, or Mul/Add/Sub by a constant) into the producer of ``y``."""
    prod = y.inputs[0] if len(y.inputs) else None
    if (prod is None or prod.op not in folded or not is_default_domain(prod)
            or len(y.outputs) != 1 or y.name in protected or len(prod.inputs) < 2
            or not is_constant(prod.inputs[1]) or prod.outputs[0] is not y):
        return False
    if len(prod.inputs) > 2 and not is_empty(prod.inputs[2]) and not is_constant(prod.inputs[2]):
        return False
    if any(t.name in protected for t in bn.outputs[1:] if not is_empty(t)):
        return False
    if bn.op == "BatchNormalization":
        params = _bn_params(bn, opset)
    else:
        w = constant_value(prod.inputs[1])
        rank, axis = (2, 1) if prod.op == "Gemm" else (w.ndim, 1)
        if w.dtype.kind != "f":
            return False
        params = _affine_params(bn, y, rank, axis)
        if params is not None and constant_value(
                bn.inputs[1] if bn.inputs[0] is y else bn.inputs[0]).dtype != w.dtype:
            return False
    if params is None:
        return False
    s, t = params
    new = _fold_into_gemm(prod, s, t) if prod.op == "Gemm" else _fold_into_conv(prod, s, t)
    if new is None:
        return False
    w_new, b_new = new
    base = prod.name or bn.outputs[0].name
    w_t = gs.Constant(unique_name(graph, f"{base}_bnfold_weight"), np.ascontiguousarray(w_new))
    b_t = gs.Constant(unique_name(graph, f"{base}_bnfold_bias"), np.ascontiguousarray(b_new))
    if prod.op == "Gemm":
        prod.attrs["alpha"] = 1.0
        prod.attrs["beta"] = 1.0
    inputs = [prod.inputs[0], w_t, b_t]
    prod.inputs.clear()
    prod.inputs.extend(inputs)
    out = bn.outputs[0]
    bn.outputs.clear()
    bn.inputs.clear()
    prod.outputs[0] = out
    folded[prod.op] += 1
    return True
