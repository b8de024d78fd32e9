"""Mixed-precision FP16 conversion for strongly typed TensorRT (10 STRONGLY_TYPED, 11).

TensorRT 11 has no FP16 builder flag: the ONNX types decide. This pass decides a
precision per node, converts float weights and tensors of FP16 nodes to float16,
and inserts ``Cast`` nodes wherever an FP16 tensor meets an FP32 node (and back).
Nodes kept in FP32, and why:
- reductions and accumulations (ReduceMean/Sum/..., CumSum): long sums lose digits in FP16;
- exponentials and normalisations (Exp, Softmax, LogSoftmax, Pow, Sqrt, Div,
  Reciprocal, Log, LayerNormalization, Instance/GroupNormalization): overflow
  or catastrophic cancellation;
- user exclusions (by node name or op type);
- nodes whose calibrated activations (when ``ranges`` are given) or weights
  exceed ``overflow_limit`` (FP16 saturates at 65504).
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import QuantizationError
from .collect import tensor_types
from .ranges import CalibrationResult

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
FP32_OPS: dict[str, str] = {
    **{op: "reduction accumulates in low precision" for op in (
        "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
        "ReduceLogSumExp", "ReduceProd", "CumSum")},
    **{op: "exponential/softmax overflows in FP16" for op in ("Exp", "Softmax", "LogSoftmax", "Log")},
    **{op: "normalisation is sensitive to FP16 cancellation" for op in (
        "LayerNormalization", "InstanceNormalization", "GroupNormalization", "LpNormalization",
        "SimplifiedLayerNormalization")},
    **{op: "power/root/division amplify FP16 error" for op in ("Pow", "Sqrt", "Reciprocal", "Div")},
}
# Input slots that must stay float32 whatever the node's precision.
_FP32_SLOTS = {"Resize": (1, 2), "Upsample": (1,)}
_FLOAT = TensorProto.FLOAT
_HALF = TensorProto.FLOAT16


@dataclasses.dataclass
class Fp16Options:
    """``keep_io_types``: graph inputs/outputs stay float32 (Casts inside).
    ``fp32_op_types``: op -> reason to keep in FP32 (default :data:`FP32_OPS`).
    ``exclude_nodes``/``exclude_op_types``: also keep these FP32.
    ``ranges``: calibration ranges; a node whose output was seen above
    ``overflow_limit`` stays FP32. ``check``: run the ONNX checker on the result.
    """

    keep_io_types: bool = True
    fp32_op_types: dict[str, str] = dataclasses.field(default_factory=lambda: dict(FP32_OPS))
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    ranges: CalibrationResult | None = None
    overflow_limit: float = FP16_MAX / 2
    check: bool = True


@dataclasses.dataclass
class Fp16Report:
    fp16_nodes: int
    fp32_nodes: list[tuple[str, str, str]]  # (name, op type, reason)
    casts_inserted: int

    def table(self) -> str:
        lines = [f"FP16 nodes: {self.fp16_nodes}; kept FP32: {len(self.fp32_nodes)}; "
                 f"casts inserted: {self.casts_inserted}"]
        lines += [f"  {n:<40} {op:<22} {why}" for n, op, why in self.fp32_nodes]
        return "\n".join(lines)


def convert_fp16(model: onnx.ModelProto, options: Fp16Options | None = None
                 ) -> tuple[onnx.ModelProto, Fp16Report]:
    """Return ``(fp16 model, report)``; the input model is not modified.

    Guarantees: every float32 tensor computed by an FP16 node becomes float16;
    every node input has the type its node computes in (Casts where needed);
    graph I/O types are kept when ``keep_io_types``; the result passes the ONNX
    checker. Nodes with no float tensors are untouched.
    """
    opt = options or Fp16Options()
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for i, n in enumerate(g.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
    types = tensor_types(m)
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for t in n.input:
            if t:
                consumers.setdefault(t, []).append(n)

    def is_float(t: str) -> bool:
        return types.get(t) == _FLOAT

    # ---------------------------------------------------------------- precision per node
    fp32_reason: dict[str, str] = {}
    for n in g.node:
        if not any(is_float(t) for t in list(n.input) + list(n.output)):
            continue  # integer/shape arithmetic: nothing to convert
        if n.op_type == "Constant":
            continue  # decided by its consumers below
        if n.name in opt.exclude_nodes or n.op_type in opt.exclude_op_types:
            fp32_reason[n.name] = "excluded by the user"
        elif n.op_type in opt.fp32_op_types:
            fp32_reason[n.name] = opt.fp32_op_types[n.op_type]
        elif opt.ranges is not None and any(
                o in opt.ranges and opt.ranges.ranges[o].observed_amax > opt.overflow_limit for o in n.output):
            worst = max(opt.ranges.ranges[o].observed_amax for o in n.output if o in opt.ranges)
            fp32_reason[n.name] = f"activations reach |x|={worst:.4g}, beyond the FP16 limit {opt.overflow_limit:g}"
        else:
            for t in n.input:
                if t in inits and inits[t].data_type == _FLOAT:
                    w = numpy_helper.to_array(inits[t])
                    if w.size and float(np.abs(w).max()) > FP16_MAX:
                        fp32_reason[n.name] = f"weight '{t}' exceeds the FP16 range"
    float_nodes = [n for n in g.node if n.op_type != "Constant"
                   and any(is_float(t) for t in list(n.input) + list(n.output))]
    half = {n.name for n in float_nodes if n.name not in fp32_reason}

    # ---------------------------------------------------------------- tensor types after conversion
    new_type: dict[str, int] = {}
    graph_in = {i.name for i in g.input if i.name not in inits}
    for i in g.input:
        if i.name in graph_in and is_float(i.name):
            new_type[i.name] = _FLOAT if opt.keep_io_types else _HALF
    for n in g.node:
        for o in n.output:
            if is_float(o):
                if n.op_type == "Constant":
                    cons = consumers.get(o, [])
                    new_type[o] = _HALF if cons and all(c.name in half for c in cons) else _FLOAT
                else:
                    new_type[o] = _HALF if n.name in half else _FLOAT
    for name, init in inits.items():
        if init.data_type == _FLOAT:
            cons = consumers.get(name, [])
            all_half = bool(cons) and all(c.name in half and not _fp32_slot(c, name) for c in cons)
            new_type[name] = _HALF if all_half else _FLOAT

    # ---------------------------------------------------------------- rewrite
    for name, init in inits.items():
        if new_type.get(name) == _HALF:
            arr = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(_to_half(arr), name))
    for n in g.node:
        if n.op_type == "Constant" and n.output and new_type.get(n.output[0]) == _HALF:
            for a in n.attribute:
                if a.name == "value":
                    a.t.CopyFrom(numpy_helper.from_array(_to_half(numpy_helper.to_array(a.t)), a.t.name))
        if n.name in half:
            if n.op_type == "Cast":
                for a in n.attribute:
                    if a.name == "to" and a.i == _FLOAT:
                        a.i = _HALF
            if n.op_type == "ConstantOfShape":
                for a in n.attribute:
                    if a.name == "value" and a.t.data_type == _FLOAT:
                        a.t.CopyFrom(numpy_helper.from_array(_to_half(numpy_helper.to_array(a.t))))

    casts: dict[tuple[str, int], str] = {}
    cast_nodes: dict[str, list[onnx.NodeProto]] = {}   # emitted after the producer (or first)
    taken = {o for n in g.node for o in n.output} | set(inits) | {i.name for i in g.input}
    producer = {o: n.name for n in g.node for o in n.output}

    def cast_of(t: str, to: int) -> str:
        key = (t, to)
        if key not in casts:
            name = f"{t}_to_{'fp16' if to == _HALF else 'fp32'}"
            while name in taken:
                name += "_"
            taken.add(name)
            casts[key] = name
            cast_nodes.setdefault(producer.get(t, ""), []).append(
                helper.make_node("Cast", [t], [name], to=to, name=f"{name}_Cast"))
        return casts[key]

    for n in g.node:
        if n.op_type == "Constant":
            continue
        want = _HALF if n.name in half else _FLOAT
        for idx, t in enumerate(n.input):
            if not t or t not in new_type:
                continue
            slot_want = _FLOAT if idx in _FP32_SLOTS.get(n.op_type, ()) else want
            if n.name not in half and n.name not in fp32_reason:
                continue  # not a float node
            if new_type[t] != slot_want:
                n.input[idx] = cast_of(t, slot_want)

    # graph outputs
    out_renames: dict[str, str] = {}
    for o in g.output:
        if new_type.get(o.name) == _HALF:
            if opt.keep_io_types:
                inner = f"{o.name}_fp16"
                while inner in taken:
                    inner += "_"
                taken.add(inner)
                out_renames[o.name] = inner
            else:
                o.type.tensor_type.elem_type = _HALF
    for n in g.node:
        for k, t in enumerate(n.output):
            if t in out_renames:
                n.output[k] = out_renames[t]
        for k, t in enumerate(n.input):
            if t in out_renames:
                n.input[k] = out_renames[t]
    for outer, inner in out_renames.items():
        prod = producer.get(outer, "")
        cast_nodes.setdefault(prod, []).append(helper.make_node("Cast", [inner], [outer], to=_FLOAT,
                                                                name=f"{outer}_to_fp32_Cast"))
    if not opt.keep_io_types:
        for i in g.input:
            if i.name in graph_in and is_float(i.name):
                i.type.tensor_type.elem_type = _HALF
    # casts keyed by a renamed output read the inner tensor
    for nodes in cast_nodes.values():
        for c in nodes:
            if c.input[0] in out_renames and c.output[0] != c.input[0] and c.output[0] not in out_renames:
                c.input[0] = out_renames[c.input[0]]

    ordered = list(cast_nodes.get("", []))
    for n in g.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        ordered.append(copy)
        ordered.extend(cast_nodes.get(n.name, []))
    del g.node[:]
    g.node.extend(ordered)
    del g.value_info[:]
    try:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False)
    except Exception as exc:  # noqa: BLE001
        log.warning("shape inference after FP16 conversion failed: %s", exc)
    if opt.check:
        try:
            onnx.checker.check_model(m, full_check=True)
        except Exception as exc:  # noqa: BLE001
            raise QuantizationError(f"The FP16 model fails the ONNX checker: {exc}") from exc
    fp32_nodes = [(n.name, n.op_type, fp32_reason[n.name]) for n in model.graph.node
                  if n.name in fp32_reason] if all(n.name for n in model.graph.node) else \
        [(name, "", why) for name, why in fp32_reason.items()]
    report = Fp16Report(len(half), fp32_nodes, sum(len(v) for v in cast_nodes.values()))
    log.info("FP16: %d nodes converted, %d kept FP32, %d casts", report.fp16_nodes, len(fp32_nodes),
             report.casts_inserted)
    return m, report


def _to_half(arr: np.ndarray) -> np.ndarray:
    """float16 copy, saturating at +-65504 (masks written as float32 min stay finite, not -inf)."""
    return np.clip(np.asarray(arr, np.float32), -FP16_MAX, FP16_MAX).astype(np.float16)


def _fp32_slot(node: onnx.NodeProto, tensor: str) -> bool:
    slots = _FP32_SLOTS.get(node.op_type, ())
    return any(node.input[i] == tensor for i in slots if i < len(node.input))
