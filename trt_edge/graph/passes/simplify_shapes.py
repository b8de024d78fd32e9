"""Shape-subgraph simplification.

Exporters compute shapes at run time (``Shape -> Gather -> Unsqueeze ->
Concat -> Reshape``) even where the dimensions are fixed. Once shape
inference proves a dimension static, the part of a ``Shape`` result that is
read becomes a constant, and constant folding removes the rest of the chain.
Dynamic dimensions (a ``batch`` axis) are never frozen: a value is replaced
only when every dimension it selects is a fixed integer in the model itself.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import onnx

from ..registry import PassContext, register_pass
from ._common import (bypass_node, constant_value, gs_module, is_constant, is_default_domain,
                      is_empty, protected_names)

log = logging.getLogger(__name__)

Dims = list[int | None]


def inferred_shapes(graph: Any, trust_annotations: bool = False) -> dict[str, Dims]:
    """Static knowledge of every tensor's shape (None for an unknown dimension).

    Runs ONNX shape inference with data propagation on an export of ``graph``
    (skipped with ``trust_annotations``, when the graph's shapes already came
    from that inference); a model that shape inference cannot handle yields
    whatever the graph's own annotations say.
    """
    gs = gs_module()
    shapes: dict[str, Dims] = {}
    for name, t in graph.tensors().items():
        if t.shape is not None:
            shapes[name] = [d if isinstance(d, (int, np.integer)) and d >= 0 else None for d in t.shape]
    if trust_annotations:
        return shapes
    try:
        model = gs.export_onnx(graph, do_type_check=False)
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - partial knowledge is fine, a wrong one is not
        log.debug("shape inference failed (%s); using the graph's annotations only", exc)
        return shapes
    g = inferred.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = [int(d.dim_value) if d.HasField("dim_value") else None
                               for d in tt.shape.dim]
    return shapes


def _static(dims: Sequence[int | None]) -> bool:
    return all(d is not None for d in dims)


def _shape_slice(node: Any, dims: Dims) -> Dims:
    start = int(node.attrs.get("start", 0))
    end = node.attrs.get("end")
    return dims[start:] if end is None else dims[start:int(end)]


def _const_ints(t: Any) -> np.ndarray | None:
    if is_empty(t) or not is_constant(t):
        return None
    v = constant_value(t)
    return v.astype(np.int64) if np.issubdtype(v.dtype, np.integer) else None


def _gather_of_shape(node: Any, dims: Dims) -> np.ndarray | None:
    idx = _const_ints(node.inputs[1])
    if idx is None or int(node.attrs.get("axis", 0)) != 0:
        return None
    flat = idx.reshape(-1)
    if any(i < -len(dims) or i >= len(dims) for i in flat):
        return None
    picked = [dims[int(i)] for i in flat]
    if not _static(picked):
        return None
    return np.asarray(picked, dtype=np.int64).reshape(idx.shape)


def _slice_of_shape(node: Any, dims: Dims) -> np.ndarray | None:
    starts, ends = _const_ints(node.inputs[1]), _const_ints(node.inputs[2])
    if starts is None or ends is None or starts.size != 1 or ends.size != 1:
        return None
    if len(node.inputs) > 3 and not is_empty(node.inputs[3]):
        axes = _const_ints(node.inputs[3])
        if axes is None or axes.size != 1 or int(axes[0]) not in (0, -1):
            return None
    step = 1
    if len(node.inputs) > 4 and not is_empty(node.inputs[4]):
        steps = _const_ints(node.inputs[4])
        if steps is None or steps.size != 1 or int(steps[0]) == 0:
            return None
        step = int(steps[0])
    # Python slicing clamps exactly as ONNX Slice does on a 1-D tensor.
    picked = dims[int(starts[0]):int(ends[0]):step]
    if not _static(picked):
        return None
    return np.asarray(picked, dtype=np.int64)


def _replace_with_constant(t: Any, value: np.ndarray, name_suffix: str = "__static") -> None:
    gs = gs_module()
    prod = t.inputs[0]
    idx = next(i for i, o in enumerate(prod.outputs) if o is t)
    prod.outputs[idx] = gs.Variable(f"{t.name}{name_suffix}")
    t.to_constant(value)


@register_pass("simplify_shapes", order=30)
def simplify_shapes(graph: Any, ctx: PassContext) -> Any:
    """Replace Shape/Size results (or the Gather/Slice read of them) by constants where the dims are static.

    Also drops Reshape nodes that provably do nothing (static input shape equal
    to the output shape) and collapses ``Reshape -> Reshape`` into one. Run
    ``fold_constants`` afterwards to fold what became constant. Dynamic
    dimensions are left dynamic.
    """
    graph.toposort()
    shapes = inferred_shapes(graph, ctx.shapes_inferred)
    protected = protected_names(graph, ctx)
    stats = {"shape": 0, "gather": 0, "slice": 0, "size": 0, "reshape_noop": 0, "reshape_chain": 0}
    for node in list(graph.nodes):
        if not is_default_domain(node) or not node.outputs or is_empty(node.outputs[0]):
            continue
        out = node.outputs[0]
        if out.name in protected or not len(out.inputs):
            continue
        if node.op in ("Shape", "Size") and not is_empty(node.inputs[0]):
            dims = shapes.get(node.inputs[0].name)
            if dims is None:
                continue
            if node.op == "Size":
                if _static(dims):
                    _replace_with_constant(out, np.asarray(int(np.prod(dims, dtype=np.int64)),
                                                           dtype=np.int64))
                    stats["size"] += 1
                continue
            picked = _shape_slice(node, dims)
            if _static(picked):
                _replace_with_constant(out, np.asarray(picked, dtype=np.int64))
                stats["shape"] += 1
                continue
            # Partly dynamic: fold the reads that only touch static dims.
            for consumer in list(out.outputs):
                if (not is_default_domain(consumer) or not consumer.outputs
                        or consumer.inputs[0] is not out or consumer.outputs[0].name in protected):
                    continue
                value = None
                if consumer.op == "Gather":
                    value = _gather_of_shape(consumer, picked)
                    key = "gather"
                elif consumer.op == "Slice":
                    value = _slice_of_shape(consumer, picked)
                    key = "slice"
                if value is not None:
                    _replace_with_constant(consumer.outputs[0], value)
                    stats[key] += 1
        elif node.op == "Reshape" and len(node.inputs) >= 2:
            src = node.inputs[0]
            in_dims, out_dims = shapes.get(src.name), shapes.get(out.name)
            if (in_dims is not None and out_dims is not None and _static(in_dims)
                    and in_dims == out_dims):
                if bypass_node(graph, node, src, out, protected):
                    stats["reshape_noop"] += 1
                    continue
            prod = src.inputs[0] if len(src.inputs) else None
            target = _const_ints(node.inputs[1])
            if (prod is not None and prod.op == "Reshape" and is_default_domain(prod)
                    and target is not None and src.name not in protected
                    and len(src.outputs) == 1
                    and (int(node.attrs.get("allowzero", 0)) == 1 or not np.any(target == 0))):
                # Reshape(Reshape(x, a), b) == Reshape(x, b) when b copies no dimension from its input.
                node.inputs[0] = prod.inputs[0]
                stats["reshape_chain"] += 1
    graph.cleanup(remove_unused_graph_inputs=False, recurse_subgraphs=False).toposort()
    ctx.record("simplify_shapes", **stats)
    return graph
