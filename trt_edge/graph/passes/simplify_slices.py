"""Slice simplification: drop slices that keep everything, merge chains of slices on other axes.

Exporters write ``x[:, :65, ::2]`` as a chain of one-axis Slices (often starting with a full
``[0:INT_MAX]`` slice of axis 0): STFT front ends such as silero-vad's do this in every branch.
Both rewrites are exact (they select the same elements): a Slice with start 0, step 1 and an
end at or past the axis length is the identity; two Slices on disjoint axes compose into one
Slice listing both axes.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..registry import PassContext, register_pass
from ._common import (bypass_node, constant_value, gs_module, is_constant, is_default_domain, is_empty,
                      iter_subgraphs, producer, protected_names)

log = logging.getLogger(__name__)

_BIG = 2 ** 31 - 1  # an end at or above this means "to the end" for any real tensor


def _params(node: Any, opset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(starts, ends, axes, steps) of a Slice with constant parameters, else None."""
    if opset < 10 or node.op != "Slice" or not is_default_domain(node) or len(node.inputs) < 3:
        return None
    ins = list(node.inputs) + [None] * (5 - len(node.inputs))
    for t in ins[1:3]:
        if t is None or is_empty(t) or not is_constant(t):
            return None
    for t in ins[3:5]:
        if t is not None and not is_empty(t) and not is_constant(t):
            return None
    starts = constant_value(ins[1]).astype(np.int64).ravel()
    ends = constant_value(ins[2]).astype(np.int64).ravel()
    if ins[3] is None or is_empty(ins[3]):
        axes = np.arange(len(starts), dtype=np.int64)
    else:
        axes = constant_value(ins[3]).astype(np.int64).ravel()
    steps = (np.ones(len(starts), np.int64) if ins[4] is None or is_empty(ins[4])
             else constant_value(ins[4]).astype(np.int64).ravel())
    if not len(starts) == len(ends) == len(axes) == len(steps):
        return None
    return starts, ends, axes, steps


def _rank(tensor: Any) -> int | None:
    shape = getattr(tensor, "shape", None)
    return None if shape is None else len(shape)


def _normalized_axes(axes: np.ndarray, rank: int | None) -> np.ndarray | None:
    if (axes < 0).any():
        if rank is None:
            return None
        axes = np.where(axes < 0, axes + rank, axes)
    return axes


def _is_noop(node: Any, params: tuple[np.ndarray, ...]) -> bool:
    starts, ends, axes, steps = params
    shape = getattr(node.inputs[0], "shape", None)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step != 1 or start != 0:
            return False
        dim = None
        if shape is not None and -len(shape) <= axis < len(shape):
            d = shape[int(axis)]
            dim = d if isinstance(d, (int, np.integer)) and d >= 0 else None
        if end < _BIG and (dim is None or end < dim):
            return False
    return True


@register_pass("simplify_slices", order=33)
def simplify_slices(graph: Any, ctx: PassContext) -> Any:
    """Remove Slices that keep every element; merge a Slice into the Slice that reads it when
    their axes are disjoint and nothing else reads the inner one. Exact; nested graphs too."""
    gs = gs_module()
    removed = merged = 0
    for g in [graph, *iter_subgraphs(graph)]:
        protected = protected_names(g, ctx)
        for node in list(g.nodes):
            params = _params(node, ctx.opset)
            if params is not None and _is_noop(node, params):
                if bypass_node(g, node, node.inputs[0], node.outputs[0], protected):
                    removed += 1
        for outer in list(g.nodes):
            p_out = _params(outer, ctx.opset)
            if p_out is None:
                continue
            inner = producer(outer.inputs[0])
            p_in = _params(inner, ctx.opset) if inner is not None else None
            if p_in is None or inner not in g.nodes:
                continue
            mid = inner.outputs[0]
            if len(mid.outputs) != 1 or mid.name in protected:
                continue
            rank = _rank(inner.inputs[0]) or _rank(mid)
            a_in, a_out = _normalized_axes(p_in[2], rank), _normalized_axes(p_out[2], rank)
            if a_in is None or a_out is None or set(a_in.tolist()) & set(a_out.tolist()):
                continue
            stem = outer.name or outer.outputs[0].name
            joined = [np.concatenate([x, y]) for x, y in zip(p_in, p_out)]
            joined[2] = np.concatenate([a_in, a_out])
            consts = [gs.Constant(f"{stem}__merged_{what}", values=arr.astype(np.int64))
                      for what, arr in zip(("starts", "ends", "axes", "steps"), joined)]
            outer.inputs.clear()
            outer.inputs.extend([inner.inputs[0], *consts])
            inner.outputs.clear()
            merged += 1
        g.cleanup(remove_unused_graph_inputs=False, recurse_subgraphs=False).toposort()
    ctx.record("simplify_slices", removed_noop=removed, merged=merged)
    return graph
