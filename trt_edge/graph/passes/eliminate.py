"""Elimination passes: no-op nodes, dead nodes and duplicated work.

None of them changes a single computed value: they only remove nodes whose
output equals their input (Identity, inference-mode Dropout, Cast to the same
type) or whose result is already computed elsewhere (common subexpressions,
duplicated constants), and nodes nothing reads.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np

from ..registry import PassContext, register_pass
from ._common import (NONDETERMINISTIC_OPS, PRESERVED_OPS, attr_key, bypass_node, constant_value,
                      gs_module, has_subgraph, is_constant, is_default_domain, is_empty,
                      protected_names)

log = logging.getLogger(__name__)


def _dropout_is_noop(node: Any, opset: int) -> bool:
    """Dropout is the identity at inference, unless opset>=12 training_mode is (maybe) true."""
    if opset < 7 and not node.attrs.get("is_test", 0):
        return False  # opset 1-6: is_test=0 means training behaviour
    if len(node.inputs) >= 3 and not is_empty(node.inputs[2]):
        mode = node.inputs[2]
        if not is_constant(mode) or bool(np.asarray(constant_value(mode)).item()):
            return False
    return True


def _cast_is_noop(node: Any) -> bool:
    src = node.inputs[0].dtype
    to = node.attrs.get("to")
    if src is None or to is None:
        return False
    try:
        from onnx import helper
        target = np.dtype(helper.tensor_dtype_to_np_dtype(int(to)))
        return np.dtype(src) == target
    except (TypeError, ValueError, KeyError):
        return False


@register_pass("eliminate_identity", order=10)
def eliminate_identity(graph: Any, ctx: PassContext) -> Any:
    """Remove Identity, inference-mode Dropout and same-type Cast nodes; values unchanged.

    Graph inputs/outputs keep their names (an Identity between two interface
    tensors stays), and nested graphs are handled recursively.
    """
    removed: dict[str, int] = {}
    for g in [graph, *_subgraphs(graph)]:
        protected = protected_names(g, ctx)
        graph_outputs = {t.name for t in g.outputs}
        for node in list(g.nodes):
            if not is_default_domain(node) or not node.inputs or not node.outputs:
                continue
            if node.op == "Identity":
                ok = True
            elif node.op == "Dropout":
                ok = _dropout_is_noop(node, ctx.opset)
                if ok and len(node.outputs) > 1:
                    mask = node.outputs[1]
                    ok = not mask.outputs and mask.name not in graph_outputs
            elif node.op == "Cast":
                ok = _cast_is_noop(node)
            else:
                continue
            if not ok or is_empty(node.inputs[0]):
                continue
            if bypass_node(g, node, node.inputs[0], node.outputs[0], protected):
                removed[node.op] = removed.get(node.op, 0) + 1
        g.cleanup(remove_unused_graph_inputs=False, recurse_subgraphs=False).toposort()
    for op, n in removed.items():
        ctx.record("eliminate_identity", **{f"removed_{op}": n})
    ctx.record("eliminate_identity", removed=sum(removed.values()))
    return graph


def _subgraphs(graph: Any) -> list[Any]:
    from ._common import iter_subgraphs
    return list(iter_subgraphs(graph))


@register_pass("eliminate_dead", order=90)
def eliminate_dead(graph: Any, ctx: PassContext) -> Any:
    """Remove nodes and constants no graph output depends on; the interface is kept.

    Unused graph inputs stay (removing them would change the model's
    signature); nested graphs are cleaned too.
    """
    before = len(graph.nodes)
    graph.cleanup(remove_unused_graph_inputs=False, recurse_subgraphs=True).toposort()
    ctx.record("eliminate_dead", removed=before - len(graph.nodes))
    return graph


def _dedupe_constants(graph: Any, max_bytes: int) -> int:
    """Make consumers of byte-identical constants share one tensor."""
    gs = gs_module()
    outer = protected_names(graph, PassContext())
    seen: dict[tuple[Any, ...], Any] = {}
    merged = 0
    local_nodes = {id(n) for n in graph.nodes}  # never rewire nested-graph consumers
    tensors = graph.tensors()
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, gs.Constant) or name in outer:
            continue
        arr = constant_value(t)
        if arr.nbytes > max_bytes or arr.dtype.kind in "OUS":  # strings: no byte identity
            continue
        key = (str(arr.dtype), arr.shape, hashlib.sha256(arr.tobytes()).hexdigest())
        first = seen.setdefault(key, t)
        if first is t:
            continue
        consumers = list(t.outputs)
        if any(id(n) not in local_nodes for n in consumers):
            continue
        for node in consumers:
            for i, inp in enumerate(node.inputs):
                if inp is t:
                    node.inputs[i] = first
        merged += 1
    return merged


def _node_key(node: Any) -> tuple[Any, ...] | None:
    if (node.op in NONDETERMINISTIC_OPS or node.op in PRESERVED_OPS or has_subgraph(node)
            or not node.outputs):
        return None
    try:
        attrs = tuple(sorted((k, attr_key(v)) for k, v in node.attrs.items()))
    except (TypeError, ValueError):  # e.g. string tensors in attributes: not compared
        return None
    return (node.domain or "", node.op, attrs, tuple(id(t) for t in node.inputs),
            len(node.outputs))


@register_pass("eliminate_duplicates", order=60)
def eliminate_duplicates(graph: Any, ctx: PassContext) -> Any:
    """Merge identical constants and nodes computing the same thing (same op, attributes, inputs).

    Deterministic ops only; nodes with nested graphs, Q/DQ and random ops are
    never merged; a node writing a protected tensor is kept.
    """
    max_bytes = int(ctx.option("eliminate_duplicates", "max_constant_bytes", 64 << 20))
    merged_constants = _dedupe_constants(graph, max_bytes)
    protected = protected_names(graph, ctx)
    merged_nodes = 0
    changed = True
    while changed:  # merging may make downstream nodes identical
        changed = False
        graph.toposort()
        seen: dict[tuple[Any, ...], Any] = {}
        for node in list(graph.nodes):
            key = _node_key(node)
            if key is None or not node.outputs:
                continue
            first = seen.setdefault(key, node)
            if first is node:
                continue
            if any(t.name in protected for t in node.outputs):
                continue
            for mine, theirs in zip(node.outputs, first.outputs):
                for consumer in list(mine.outputs):
                    for i, inp in enumerate(consumer.inputs):
                        if inp is mine:
                            consumer.inputs[i] = theirs
            node.inputs.clear()
            node.outputs.clear()
            merged_nodes += 1
            changed = True
        graph.cleanup(remove_unused_graph_inputs=False, recurse_subgraphs=False)
    graph.toposort()
    ctx.record("eliminate_duplicates", merged_nodes=merged_nodes, merged_constants=merged_constants)
    return graph
