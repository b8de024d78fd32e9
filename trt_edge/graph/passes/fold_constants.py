"""Constant folding that evaluates the real ops instead of re-implementing them.

onnx-graphsurgeon's ``fold_constants`` has its own shortcuts (0.6.1 folds
``Shape`` ignoring ``start``/``end``). Here every node whose inputs are all
constants is executed by ONNX Runtime itself (all of ORT's own graph
optimisations disabled), in one session for the whole constant subgraph, so a
folded value is exactly what the original model would have computed at run
time. When ONNX Runtime cannot run the constant subgraph (an op it lacks on
this build), ``onnx.reference.ReferenceEvaluator`` is the fallback oracle.

Folding also runs inside control-flow bodies (If branches, Loop/Scan bodies), on
what is constant there. Two things are never folded, so a file never grows:
weight-only quantization (a ``DequantizeLinear``, or a ``Cast`` of an int8/uint8/
int4/fp16... initializer to a wider float, typically followed by a scale ``Mul``:
folding it would store FP32 weights, 2-8x larger) and any tensor larger than
``size_threshold`` bytes that is larger than the constants it is computed from
(``ConstantOfShape``/``Expand``/``Tile`` of a small value, onnxslim's
``--size-threshold``).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx

from ...errors import GraphPassError
from ..registry import PassContext, register_pass
from ._common import (NONDETERMINISTIC_OPS, PRESERVED_OPS, gs_module, has_subgraph, is_constant,
                      is_default_domain, is_empty, iter_subgraphs, protected_names)

log = logging.getLogger(__name__)

DEFAULT_SIZE_THRESHOLD = 16 << 20
DEFAULT_MAX_BYTES = DEFAULT_SIZE_THRESHOLD  # the option's former name
# A constant stored in one of these types and Cast to a wider float is a compressed weight.
_COMPACT_TYPES = frozenset({"int8", "uint8", "int4", "uint4", "int16", "uint16", "float16", "bfloat16",
                            "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz"})
_WEIGHT_MIN_BYTES = 4096  # smaller casts (shape arithmetic, scalars) fold as usual


def _foldable_op(node: Any) -> bool:
    return (is_default_domain(node) and node.op not in NONDETERMINISTIC_OPS
            and node.op not in PRESERVED_OPS and not has_subgraph(node)
            and any(not is_empty(t) for t in node.outputs))


def is_weight_dequantization(node: Any) -> bool:
    """A Cast of a compact (int8/uint8/int4/fp16/...) constant weight to a wider float type."""
    if node.op != "Cast" or not node.inputs or not is_constant(node.inputs[0]):
        return False
    value = np.asarray(node.inputs[0].values)
    if value.nbytes < _WEIGHT_MIN_BYTES or value.dtype.name not in _COMPACT_TYPES:
        return False
    try:
        target = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(node.attrs.get("to", 0))))
    except Exception:  # noqa: BLE001 - unknown type: leave it alone
        return True
    return target.kind == "f" and target.itemsize > value.dtype.itemsize


def find_constant_nodes(graph: Any) -> list[Any]:
    """Nodes (in topological order) whose every input is a constant or another such node's output."""
    gs = gs_module()
    graph.toposort()
    known: set[int] = set()
    for t in graph.tensors().values():
        if isinstance(t, gs.Constant):
            known.add(id(t))
    found = []
    for node in graph.nodes:
        if not _foldable_op(node) or is_weight_dequantization(node):
            continue
        if all(is_empty(t) or id(t) in known for t in node.inputs):
            found.append(node)
            known.update(id(t) for t in node.outputs if not is_empty(t))
    return found


def _evaluation_model(graph: Any, nodes: list[Any], top: Any = None) -> onnx.ModelProto:
    """A model with no inputs whose outputs are every output of ``nodes``."""
    gs = gs_module()
    top = top if top is not None else graph
    outputs = [t for n in nodes for t in n.outputs if not is_empty(t)]
    sub = gs.Graph(nodes=list(nodes), inputs=[], outputs=outputs, opset=top.opset,
                   import_domains=top.import_domains, name="constant_subgraph")
    model = gs.export_onnx(sub, do_type_check=False)
    # Untyped outputs: ONNX Runtime infers their types itself (ours may be unknown).
    del model.graph.output[:]
    model.graph.output.extend(onnx.ValueInfoProto(name=t.name) for t in outputs)
    del model.graph.value_info[:]
    return model


def evaluate_constant_nodes(graph: Any, nodes: list[Any], top: Any = None) -> dict[str, np.ndarray]:
    """Values of every output of ``nodes`` (which must only depend on constants).

    ``top``: the top-level graph when ``graph`` is a nested one (for the opsets).
    """
    if not nodes:
        return {}
    model = _evaluation_model(graph, nodes, top)
    names = [o.name for o in model.graph.output]
    try:
        from ...ort_exec import make_session, run_model
        values = run_model(make_session(model), {}, output_names=names)
        return {n: np.asarray(values[n]) for n in names}
    except Exception as exc:  # noqa: BLE001 - fall back to the reference evaluator
        log.debug("ONNX Runtime could not evaluate the constant subgraph (%s); using "
                  "onnx.reference", exc)
    from onnx.reference import ReferenceEvaluator
    try:
        ref_values = ReferenceEvaluator(model).run(names, {})
    except Exception as exc:  # noqa: BLE001
        raise GraphPassError(f"Could not evaluate the constant subgraph for folding: {exc}. "
                             "Skip the pass with --skip fold_constants.") from exc
    return dict(zip(names, (np.asarray(v) for v in ref_values)))


def _source_bytes(nodes: list[Any]) -> dict[str, int]:
    """For each output of ``nodes``: bytes of the stored constants it is computed from."""
    leaves: dict[str, frozenset[str]] = {}
    sizes: dict[str, int] = {}
    for node in nodes:
        deps: set[str] = set()
        for t in node.inputs:
            if is_empty(t):
                continue
            if t.name in leaves:
                deps |= leaves[t.name]
            elif is_constant(t):
                deps.add(t.name)
                sizes[t.name] = int(np.asarray(t.values).nbytes)
        if node.op == "Constant":
            for key, value in node.attrs.items():
                if key == "value" and hasattr(value, "values"):
                    name = f"{node.name}/value"
                    deps.add(name)
                    sizes[name] = int(np.asarray(value.values).nbytes)
        frozen = frozenset(deps)
        for t in node.outputs:
            if not is_empty(t):
                leaves[t.name] = frozen
    return {name: sum(sizes[d] for d in deps) for name, deps in leaves.items()}


def _fold_graph(graph: Any, ctx: PassContext, top: Any, threshold: int | None) -> dict[str, int]:
    nodes = find_constant_nodes(graph)
    if not nodes:
        return {"folded_nodes": 0, "materialized": 0, "kept_large": 0}
    values = evaluate_constant_nodes(graph, nodes, top)
    protected = protected_names(graph, ctx)
    in_set = {id(n) for n in nodes}
    source = _source_bytes(nodes)

    # Tensors needed by the rest of the graph: materialise them when small enough,
    # otherwise keep their producer and materialise its inputs instead.
    frontier = [t for n in nodes for t in n.outputs
                if not is_empty(t) and (t.name in protected or any(id(c) not in in_set for c in t.outputs))]
    materialize: dict[str, Any] = {}
    keep: set[int] = set()
    kept_large = 0
    while frontier:
        t = frontier.pop()
        prod = t.inputs[0] if len(t.inputs) else None
        if t.name in materialize or prod is None or id(prod) in keep:
            continue
        value = values[t.name]
        too_big = threshold is not None and value.nbytes > threshold and value.nbytes > source.get(t.name, 0)
        if t.name in protected or too_big or value.dtype == object:
            keep.add(id(prod))
            kept_large += int(bool(too_big))
            frontier.extend(i for i in prod.inputs if not is_empty(i) and len(i.inputs)
                            and id(i.inputs[0]) in in_set)
        else:
            materialize[t.name] = t
    gs = gs_module()
    for name, t in materialize.items():
        # Detach from the producer without shifting its other outputs' positions.
        prod = t.inputs[0]
        idx = next(i for i, o in enumerate(prod.outputs) if o is t)
        prod.outputs[idx] = gs.Variable(f"{name}__folded_away")
        t.to_constant(np.array(values[name], order="C"))  # keeps 0-d shapes
    before = len(graph.nodes)
    graph.cleanup(remove_unused_graph_inputs=False, recurse_subgraphs=False).toposort()
    return {"folded_nodes": before - len(graph.nodes), "materialized": len(materialize),
            "kept_large": kept_large}


@register_pass("fold_constants", order=20)
def fold_constants(graph: Any, ctx: PassContext) -> Any:
    """Replace every tensor computable from constants alone by its value (as ONNX Runtime computes it).

    Guarantees: values are those ORT computes for the original nodes; graph
    outputs, tensors read by nested graphs and ``ctx.protected`` tensors are
    never replaced (their producers stay); inside If/Loop/Scan bodies, what is
    constant there is folded the same way; a folded tensor larger than
    ``size_threshold`` bytes (option, default 16 MiB; None: no limit) that is
    bigger than the stored constants it is computed from (e.g. ``ConstantOfShape``
    or ``Expand`` of a small value) is not materialised, so the file does not
    grow; weight-only quantization (DequantizeLinear, a Cast of an int8/fp16...
    weight to float) stays as it is; random, Q/DQ, sequence and control-flow ops
    are never folded.
    """
    threshold = ctx.option("fold_constants", "max_bytes", None)
    if threshold is None:
        threshold = ctx.option("fold_constants", "size_threshold", DEFAULT_SIZE_THRESHOLD)
    threshold = None if threshold is None else int(threshold)
    totals = {"folded_nodes": 0, "materialized": 0, "kept_large": 0}
    for g in [graph, *iter_subgraphs(graph)]:
        sub_ctx = ctx if g is graph else PassContext(opset=ctx.opset, protected=set(ctx.protected))
        for k, v in _fold_graph(g, sub_ctx, graph, threshold).items():
            totals[k] += v
    ctx.record("fold_constants", **totals)
    return graph
