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
                      is_empty, protected_names, unique_name)

log = logging.getLogger(__name__)

Dims = list[Any]  # int for a static dim, None (or a symbol name, where kept) otherwise


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
            shapes[name] = [int(d) if isinstance(d, (int, np.integer)) and d >= 0 else None for d in t.shape]
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


def _unsqueeze_axes(node: Any, opset: int) -> np.ndarray | None:
    if opset >= 13:
        return _const_ints(node.inputs[1]) if len(node.inputs) > 1 else None
    axes = node.attrs.get("axes")
    return None if axes is None else np.asarray(axes, dtype=np.int64)


def merged_unsqueeze_axes(rank: int, first: Sequence[int], second: Sequence[int]) -> list[int] | None:
    """Axes of one Unsqueeze equal to Unsqueeze(first) then Unsqueeze(second) on a rank-``rank`` input."""
    dims: list[int | None] = list(range(rank))          # original dims by index, None = inserted 1
    for axes in (first, second):
        out_rank = len(dims) + len(axes)
        norm = sorted(a + out_rank if a < 0 else a for a in axes)
        if len(set(norm)) != len(norm) or any(not 0 <= a < out_rank for a in norm):
            return None
        it = iter(dims)
        dims = [None if i in norm else next(it) for i in range(out_rank)]
    return [i for i, d in enumerate(dims) if d is None]


def _replace_with_constant(t: Any, value: np.ndarray, name_suffix: str = "__static") -> None:
    gs = gs_module()
    prod = t.inputs[0]
    idx = next(i for i, o in enumerate(prod.outputs) if o is t)
    prod.outputs[idx] = gs.Variable(f"{t.name}{name_suffix}")
    t.to_constant(value)


@register_pass("simplify_shapes", order=30)
def simplify_shapes(graph: Any, ctx: PassContext) -> Any:
    """Replace Shape/Size results (or the Gather/Slice read of them) by constants where the dims are static.

    Also drops Reshape nodes that provably do nothing (input shape equal to the
    output shape, static or the same symbolic dimensions from shape inference) and collapses ``Reshape -> Reshape`` and
    ``Unsqueeze -> Unsqueeze`` (opset 13+) chains into one node. Run
    ``fold_constants`` afterwards to fold what became constant. Dynamic
    dimensions are left dynamic. Nested graphs (If branches, Loop/Scan bodies) are
    simplified the same way, with what shape inference knows inside them.
    """
    from ._common import iter_subgraphs
    stats = {"shape": 0, "gather": 0, "slice": 0, "size": 0, "reshape_noop": 0, "reshape_chain": 0,
             "unsqueeze_chain": 0}
    for g in [graph, *iter_subgraphs(graph)]:
        _simplify_graph(g, ctx, stats)
    ctx.record("simplify_shapes", **stats)
    return graph


def _simplify_graph(graph: Any, ctx: PassContext, stats: dict[str, int]) -> None:
    graph.toposort()
    shapes = inferred_shapes(graph, ctx.shapes_inferred)
    protected = protected_names(graph, ctx)
    sym: dict[str, Dims] | None = None  # symbolic shapes, computed on first need
    for node in list(graph.nodes):
        if not is_default_domain(node) or not node.outputs or is_empty(node.outputs[0]):
            continue
        out = node.outputs[0]
        if node.op in ("Shape", "Size") and not is_empty(node.inputs[0]) and out.name not in protected:
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
            if sym is None:
                sym = symbolic_shapes(graph, ctx.shapes_inferred)
            sym_in, sym_out = sym.get(src.name), sym.get(out.name)
            same_symbolic = (sym_in is not None and sym_out is not None and len(sym_in) == len(sym_out)
                             and all(isinstance(d, str) or (isinstance(d, int) and d >= 0) for d in sym_in)
                             and list(sym_in) == list(sym_out))
            if same_symbolic or (in_dims is not None and out_dims is not None and _static(in_dims)
                                 and in_dims == out_dims):
                if bypass_node(graph, node, src, out, protected):
                    stats["reshape_noop"] += 1
                    continue
            if (not is_constant(node.inputs[1]) and out_dims is not None and len(out_dims)
                    and sum(d is None for d in out_dims) <= 1 and 0 not in out_dims
                    and node.inputs[1].name not in protected):
                # The shape is computed at run time, but inference knows every output dim but at
                # most one: a constant shape (-1 for that one) gives the same result.
                gs = gs_module()
                node.inputs[1] = gs.Constant(unique_name(graph, f"{out.name}_shape"),
                                             np.asarray([-1 if d is None else d for d in out_dims], np.int64))
                stats["reshape_const_shape"] = stats.get("reshape_const_shape", 0) + 1
            prod = src.inputs[0] if len(src.inputs) else None
            target = _const_ints(node.inputs[1])
            if (prod is not None and prod.op == "Reshape" and is_default_domain(prod)
                    and target is not None and src.name not in protected
                    and len(src.outputs) == 1
                    and (int(node.attrs.get("allowzero", 0)) == 1 or not np.any(target == 0))):
                # Reshape(Reshape(x, a), b) == Reshape(x, b) when b copies no dimension from its input.
                node.inputs[0] = prod.inputs[0]
                stats["reshape_chain"] += 1
        elif node.op == "Unsqueeze" and ctx.opset >= 13:
            src = node.inputs[0]
            prod = src.inputs[0] if len(src.inputs) else None
            if (prod is None or prod.op != "Unsqueeze" or not is_default_domain(prod)
                    or src.name in protected or len(src.outputs) != 1):
                continue
            inner, outer = _unsqueeze_axes(prod, ctx.opset), _unsqueeze_axes(node, ctx.opset)
            x_dims = shapes.get(prod.inputs[0].name)
            if inner is None or outer is None or x_dims is None:
                continue
            axes = merged_unsqueeze_axes(len(x_dims), inner.reshape(-1).tolist(), outer.reshape(-1).tolist())
            if axes is None:
                continue
            gs = gs_module()
            # Unsqueeze(Unsqueeze(x, a), b) == Unsqueeze(x, merged axes).
            node.inputs[0] = prod.inputs[0]
            node.inputs[1] = gs.Constant(unique_name(graph, f"{out.name}_axes"),
                                         np.asarray(axes, dtype=np.int64))
            stats["unsqueeze_chain"] += 1
    graph.cleanup(remove_unused_graph_inputs=False, recurse_subgraphs=False).toposort()


def symbolic_shapes(graph: Any, trust_annotations: bool = False) -> dict[str, Dims]:
    """Like :func:`inferred_shapes` but keeping symbolic dimension names (``"batch"``, ``"unk__7"``)."""
    gs = gs_module()
    if not trust_annotations:
        try:
            model = onnx.shape_inference.infer_shapes(gs.export_onnx(graph, do_type_check=False),
                                                      data_prop=True)
        except Exception as exc:  # noqa: BLE001
            log.debug("shape inference failed (%s)", exc)
            return {}
        out: dict[str, Dims] = {}
        g = model.graph
        for vi in [*g.input, *g.value_info, *g.output]:
            tt = vi.type.tensor_type
            if tt.HasField("shape"):
                out[vi.name] = [int(d.dim_value) if d.HasField("dim_value") else
                                (d.dim_param or None) for d in tt.shape.dim]
        return out
    return {name: [d if isinstance(d, (int, str)) else None for d in t.shape]
            for name, t in graph.tensors().items() if t.shape is not None}


def _single_dim_read(node: Any, shapes: dict[str, Dims]) -> tuple[str, int] | None:
    """(symbol, result rank) when ``node`` reads exactly one symbolic dim of a tensor's shape.

    Recognises ``Gather(Shape(x), i)`` (scalar or 1-element index, axis 0) and
    ``Shape(x, start=a, end=a+1)``.
    """
    if node.op == "Shape":
        dims = shapes.get(node.inputs[0].name)
        if dims is None:
            return None
        picked = _shape_slice(node, list(dims))
        if len(picked) == 1 and isinstance(picked[0], str):
            return picked[0], 1
        return None
    if node.op != "Gather" or int(node.attrs.get("axis", 0)) != 0:
        return None
    src = node.inputs[0]
    shape_node = src.inputs[0] if len(src.inputs) else None
    if shape_node is None or shape_node.op != "Shape" or not is_default_domain(shape_node):
        return None
    dims = shapes.get(shape_node.inputs[0].name)
    idx = _const_ints(node.inputs[1])
    if dims is None or idx is None or idx.size != 1:
        return None
    picked = _shape_slice(shape_node, list(dims))
    i = int(idx.reshape(-1)[0])
    if not -len(picked) <= i < len(picked) or not isinstance(picked[i], str):
        return None
    return picked[i], idx.ndim


@register_pass("unify_dynamic_dims", order=35)
def unify_dynamic_dims(graph: Any, ctx: PassContext) -> Any:
    """Compute each dynamic dimension once: reads of a dim that shape inference proves equal share one tensor.

    Exporters re-read ``batch``/``sequence`` from every layer's activations
    (``Gather(Shape(h_k), 0)``). Where ONNX shape inference gives those dims
    the same symbol, every later read is rewired to the first one, and
    ``eliminate_duplicates`` then merges the Unsqueeze/Concat chains built on
    them. Verification feeds give every dynamic axis a different size, so a
    wrong equality would be caught.
    """
    graph.toposort()
    shapes = symbolic_shapes(graph, ctx.shapes_inferred)
    protected = protected_names(graph, ctx)
    first: dict[tuple[str, int], Any] = {}
    unified = 0
    for node in list(graph.nodes):
        if not is_default_domain(node) or not node.outputs or is_empty(node.outputs[0]):
            continue
        key = _single_dim_read(node, shapes)
        if key is None:
            continue
        out = node.outputs[0]
        canonical = first.setdefault(key, out)
        if canonical is out or out.name in protected or canonical.dtype != out.dtype:
            continue
        for consumer in list(out.outputs):
            for i, t in enumerate(consumer.inputs):
                if t is out:
                    consumer.inputs[i] = canonical
        unified += 1
    graph.cleanup(remove_unused_graph_inputs=False, recurse_subgraphs=False).toposort()
    ctx.record("unify_dynamic_dims", unified=unified)
    return graph
