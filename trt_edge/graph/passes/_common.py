"""Helpers shared by the built-in passes (onnx-graphsurgeon graphs).

onnx-graphsurgeon itself is imported lazily by the callers; nothing here
imports it at module level, so ``import trt_edge.graph.passes`` works with
numpy and onnx alone.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from ..registry import PassContext

# Ops whose output is not a deterministic function of their inputs: never folded or merged.
NONDETERMINISTIC_OPS = frozenset({
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
    "Bernoulli",
})
# Ops a rewrite must leave alone: folding a DequantizeLinear of int8 weights would throw away
# the explicit Q/DQ pattern TensorRT needs; sequence/optional ops do not produce plain tensors.
PRESERVED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
    "SequenceConstruct", "SequenceEmpty", "SequenceInsert", "SequenceAt", "SequenceErase",
    "SequenceLength", "SplitToSequence", "ConcatFromSequence", "SequenceMap",
    "Optional", "OptionalGetElement", "OptionalHasElement",
})
DEFAULT_DOMAINS = ("", "ai.onnx")


def gs_module() -> Any:
    from ..._lazy import require
    return require("onnx_graphsurgeon", "graph passes")


def is_default_domain(node: Any) -> bool:
    return (node.domain or "") in DEFAULT_DOMAINS


def has_subgraph(node: Any) -> bool:
    """True for If/Loop/Scan and any node carrying a graph attribute."""
    gs = gs_module()
    for value in node.attrs.values():
        if isinstance(value, gs.Graph):
            return True
        if isinstance(value, (list, tuple)) and any(isinstance(v, gs.Graph) for v in value):
            return True
    return False


def iter_subgraphs(graph: Any) -> Iterator[Any]:
    """Every nested graph (If branches, Loop/Scan bodies), recursively."""
    gs = gs_module()
    for node in graph.nodes:
        for value in node.attrs.values():
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                if isinstance(v, gs.Graph):
                    yield v
                    yield from iter_subgraphs(v)


def outer_scope_names(graph: Any) -> set[str]:
    """Names of tensors that nested graphs read from an enclosing scope.

    Rewrites must not rename, replace or materialise them: a subgraph refers to
    them by name, and a constant defined in the outer graph but consumed inside
    a branch is easy to export wrongly.
    """
    names: set[str] = set()
    for sub in iter_subgraphs(graph):
        local = {t.name for t in sub.inputs}
        for node in sub.nodes:
            local.update(t.name for t in node.outputs)
        for node in sub.nodes:
            for t in node.inputs:
                if t.name and t.name not in local:
                    names.add(t.name)
    return names


def protected_names(graph: Any, ctx: PassContext) -> set[str]:
    """Tensors a pass must not remove, rename or replace.

    Graph inputs and outputs (the model's interface), tensors that nested
    graphs read from this scope, and whatever the caller put in ``ctx.protected``.
    """
    names = set(ctx.protected)
    names.update(t.name for t in graph.outputs)
    names.update(t.name for t in graph.inputs)
    names.update(outer_scope_names(graph))
    return names


def is_constant(tensor: Any) -> bool:
    gs = gs_module()
    return isinstance(tensor, gs.Constant)


def constant_value(tensor: Any) -> np.ndarray:
    return np.asarray(tensor.values)


def is_empty(tensor: Any) -> bool:
    """An omitted optional input (empty name)."""
    return tensor is None or tensor.name == ""


def producer(tensor: Any) -> Any | None:
    return tensor.inputs[0] if len(tensor.inputs) else None


def replace_all_uses(old: Any, new: Any) -> int:
    """Make every consumer of ``old`` (nested-graph consumers included) read ``new``."""
    count = 0
    for node in list(old.outputs):
        for i, t in enumerate(node.inputs):
            if t is old:
                node.inputs[i] = new
                count += 1
    return count


def bypass_node(graph: Any, node: Any, keep: Any, drop: Any, protected: set[str]) -> bool:
    """Remove single-path ``node`` whose output ``drop`` equals its input ``keep``.

    Consumers of ``drop`` are rewired to ``keep``. When ``drop`` is a graph
    output (so its name must survive) the producer of ``keep`` is made to write
    ``drop`` directly instead. Returns False (and changes nothing) when
    neither is possible without renaming a protected tensor.
    """
    graph_outputs = {t.name for t in graph.outputs}
    if drop.name in graph_outputs:
        prod = producer(keep)
        # keep's producer must be a node of *this* graph: in a branch that returns an
        # outer-scope tensor through an Identity, renaming the outer producer's output
        # would break the enclosing graph.
        if (prod is None or keep.name in protected or is_constant(keep)
                or drop.name in {t.name for t in graph.inputs}
                or not any(n is prod for n in graph.nodes)):
            return False
        # keep's producer now writes drop; keep's other consumers read drop.
        replace_all_uses(keep, drop)
        idx = next(i for i, t in enumerate(prod.outputs) if t is keep)
        node.outputs.clear()
        node.inputs.clear()
        prod.outputs[idx] = drop
        return True
    if drop.name in protected:
        return False
    replace_all_uses(drop, keep)
    node.outputs.clear()
    node.inputs.clear()
    return True


def attr_key(value: Any) -> Any:
    """A hashable key for an attribute value (Constant node tensors compared by content)."""
    gs = gs_module()
    if isinstance(value, gs.Constant):
        arr = constant_value(value)
        return ("tensor", str(arr.dtype), arr.shape, arr.tobytes())
    if isinstance(value, np.ndarray):
        return ("ndarray", str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(attr_key(v) for v in value)
    if isinstance(value, float):
        return ("float", np.float32(value).tobytes())
    return (type(value).__name__, repr(value))


def unique_name(graph: Any, base: str) -> str:
    """``base``, or ``base_N``, whichever no tensor of ``graph`` uses yet."""
    taken = graph.tensors().keys()
    if base not in taken:
        return base
    i = 1
    while f"{base}_{i}" in taken:
        i += 1
    return f"{base}_{i}"
