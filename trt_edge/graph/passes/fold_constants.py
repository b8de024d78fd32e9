"""Constant folding that evaluates the real ops instead of re-implementing them.

onnx-graphsurgeon's ``fold_constants`` has its own shortcuts (0.6.1 folds
``Shape`` ignoring ``start``/``end``). Here every node whose inputs are all
constants is executed by ONNX Runtime itself (all of ORT's own graph
optimisations disabled), in one session for the whole constant subgraph, so a
folded value is exactly what the original model would have computed at run
time. When ONNX Runtime cannot run the constant subgraph (an op it lacks on
this build), ``onnx.reference.ReferenceEvaluator`` is the fallback oracle.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx

from ...errors import GraphPassError
from ..registry import PassContext, register_pass
from ._common import (NONDETERMINISTIC_OPS, PRESERVED_OPS, gs_module, has_subgraph,
                      is_default_domain, is_empty, protected_names)

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 16 << 20


def _foldable_op(node: Any) -> bool:
    return (is_default_domain(node) and node.op not in NONDETERMINISTIC_OPS
            and node.op not in PRESERVED_OPS and not has_subgraph(node)
            and any(not is_empty(t) for t in node.outputs))


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
        if not _foldable_op(node):
            continue
        if all(is_empty(t) or id(t) in known for t in node.inputs):
            found.append(node)
            known.update(id(t) for t in node.outputs if not is_empty(t))
    return found


def _evaluation_model(graph: Any, nodes: list[Any]) -> onnx.ModelProto:
    """A model with no inputs whose outputs are every output of ``nodes``."""
    gs = gs_module()
    outputs = [t for n in nodes for t in n.outputs if not is_empty(t)]
    sub = gs.Graph(nodes=list(nodes), inputs=[], outputs=outputs, opset=graph.opset,
                   import_domains=graph.import_domains, name="constant_subgraph")
    model = gs.export_onnx(sub, do_type_check=False)
    # Untyped outputs: ONNX Runtime infers their types itself (ours may be unknown).
    del model.graph.output[:]
    model.graph.output.extend(onnx.ValueInfoProto(name=t.name) for t in outputs)
    del model.graph.value_info[:]
    return model


def evaluate_constant_nodes(graph: Any, nodes: list[Any]) -> dict[str, np.ndarray]:
    """Values of every output of ``nodes`` (which must only depend on constants)."""
    if not nodes:
        return {}
    model = _evaluation_model(graph, nodes)
    names = [o.name for o in model.graph.output]
    try:
        from ..._lazy import require
        ort = require("onnxruntime", "constant folding")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        values = sess.run(names, {})
        return dict(zip(names, (np.asarray(v) for v in values)))
    except Exception as exc:  # noqa: BLE001 - fall back to the reference evaluator
        log.debug("ONNX Runtime could not evaluate the constant subgraph (%s); using "
                  "onnx.reference", exc)
    from onnx.reference import ReferenceEvaluator
    try:
        values = ReferenceEvaluator(model).run(names, {})
    except Exception as exc:  # noqa: BLE001
        raise GraphPassError(f"Could not evaluate the constant subgraph for folding: {exc}. "
                             "Skip the pass with --skip fold_constants.") from exc
    return dict(zip(names, (np.asarray(v) for v in values)))


@register_pass("fold_constants", order=20)
def fold_constants(graph: Any, ctx: PassContext) -> Any:
    """Replace every tensor computable from constants alone by its value (as ONNX Runtime computes it).

    Guarantees: values are those ORT computes for the original nodes; graph
    outputs, tensors read by nested graphs and ``ctx.protected`` tensors are
    never replaced (their producers stay); a folded tensor larger than
    ``max_bytes`` (option, default 16 MiB) that is bigger than its inputs
    (e.g. ``ConstantOfShape`` or ``Expand`` of a small value) is not
    materialised, so the file does not grow; random, Q/DQ, sequence and
    control-flow ops are never folded.
    """
    max_bytes = int(ctx.option("fold_constants", "max_bytes", DEFAULT_MAX_BYTES))
    nodes = find_constant_nodes(graph)
    if not nodes:
        ctx.record("fold_constants", folded_nodes=0, materialized=0)
        return graph
    values = evaluate_constant_nodes(graph, nodes)
    protected = protected_names(graph, ctx)
    in_set = {id(n) for n in nodes}

    def input_bytes(node: Any) -> int:
        total = 0
        for t in node.inputs:
            if is_empty(t):
                continue
            v = values.get(t.name)
            total += v.nbytes if v is not None else np.asarray(t.values).nbytes
        return total

    # Tensors needed by the rest of the graph: materialise them when small enough,
    # otherwise keep their producer and materialise its inputs instead.
    frontier = [t for n in nodes for t in n.outputs
                if not is_empty(t) and (t.name in protected or any(id(c) not in in_set for c in t.outputs))]
    materialize: dict[str, Any] = {}
    keep: set[int] = set()
    while frontier:
        t = frontier.pop()
        prod = t.inputs[0] if len(t.inputs) else None
        if t.name in materialize or prod is None or id(prod) in keep:
            continue
        value = values[t.name]
        too_big = value.nbytes > max_bytes and value.nbytes > input_bytes(prod)
        if t.name in protected or too_big or value.dtype == object:
            keep.add(id(prod))
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
    ctx.record("fold_constants", folded_nodes=before - len(graph.nodes), materialized=len(materialize),
               kept_large=len(keep))
    return graph
