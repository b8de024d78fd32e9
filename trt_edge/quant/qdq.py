"""Explicit INT8 quantization: QuantizeLinear/DequantizeLinear insertion by TensorRT's rules.

Rules (TENSORRT.md, "Explicit quantization"):
- int8, symmetric, zero point 0 everywhere;
- weights: stored as int8 initializers with a per-output-channel DequantizeLinear
  (axis 0 for Conv, 1 for ConvTranspose, the output axis of Gemm/MatMul weights);
- activations: one per-tensor Q/DQ pair per tensor, placed on the *inputs* of
  Conv/ConvTranspose/Gemm/MatMul and where TensorRT needs them to fuse: both inputs
  of a residual Add next to a convolution, pooling inputs, Concat inputs (one
  shared scale so the concatenation needs no requantization);
- everything else (Softmax, LayerNorm, the attention-mask arithmetic, ...) stays float.

``target="onnxruntime"`` adds what ONNX Runtime's CPU provider needs to fuse the
same graph into real int8 kernels (QLinearConv/QLinearMatMul): Q/DQ on the
outputs of the quantized compute ops and int32 biases; activations are stored as
uint8 with zero point 128, which is the very same symmetric grid (q_u8 = q_s8 + 128)
but selects ONNX Runtime's faster u8s8 kernels on x86. TensorRT also accepts
that graph, but the default ``"tensorrt"`` keeps biases in float as TensorRT prefers.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import QuantizationError
from .collect import FLOAT_TYPES, tensor_types
from .cpu import ORT_SCHEMES, ort_int8_scheme
from .methods import MIN_AMAX, per_channel_amax, symmetric_scale
from .ranges import CalibrationResult, canonical_model_hash

log = logging.getLogger(__name__)

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
POOL_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool")
# Ops through which a residual branch still "comes from a convolution".
_PASS_THROUGH = ("Relu", "Clip", "BatchNormalization", "Identity", "LeakyRelu", "Sigmoid", "Mul")
TARGETS = ("tensorrt", "onnxruntime")
QDQ_MIN_OPSET = 13  # per-axis (per-channel) QuantizeLinear/DequantizeLinear
_INT_TYPES = (np.int8, np.uint8)


def model_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def upgrade_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int | None]:
    """``(model at opset >= 13, the opset it had or None)``: per-channel Q/DQ needs opset 13.

    Models below it (paddle2onnx's opset 11-12 exports, for one) are converted with
    ``onnx.version_converter``, which rewrites the few ops whose signature changed (Clip's
    bounds become inputs, Resize, Split, ...) and keeps every tensor name, so ranges
    calibrated on the converted model apply to it. Raises :class:`QuantizationError`, before
    any long work, when the converter cannot.
    """
    opset = model_opset(model)
    if opset >= QDQ_MIN_OPSET:
        return model, None
    from onnx import version_converter
    try:
        converted = version_converter.convert_version(model, QDQ_MIN_OPSET)
    except Exception as exc:  # noqa: BLE001 - the converter raises several types
        raise QuantizationError(
            f"The model uses opset {opset}; INT8 Q/DQ needs opset >= {QDQ_MIN_OPSET} (per-channel weight "
            f"scales) and onnx.version_converter cannot convert it ({exc}). Re-export it with opset 13 or "
            "newer (trt-edge export --opset 17; paddle2onnx --opset_version 13).") from exc
    log.warning("The model uses opset %d: converted it to opset %d with onnx.version_converter (needed for "
                "per-channel Q/DQ; tensor names are kept)", opset, QDQ_MIN_OPSET)
    return converted, opset


@dataclasses.dataclass
class ExistingQuantization:
    """Quantization a model already carries (see :func:`find_existing_quantization`).

    ``activation_qdq``: QuantizeLinear nodes on run-time tensors (the model is already an INT8
    Q/DQ model); ``weight_dq``: tensors produced by DequantizeLinear of a constant (weight-only
    Q/DQ); ``cast_mul``: tensors produced by ``Mul(Cast(int8 constant), scale)`` (weight-only INT8
    the way some exporters write it), optionally with a ``Sub`` of a zero point.
    """

    activation_qdq: list[str] = dataclasses.field(default_factory=list)
    weight_dq: list[str] = dataclasses.field(default_factory=list)
    cast_mul: list[str] = dataclasses.field(default_factory=list)

    @property
    def dequantized_weights(self) -> set[str]:
        return set(self.weight_dq) | set(self.cast_mul)

    def __bool__(self) -> bool:
        return bool(self.activation_qdq or self.weight_dq or self.cast_mul)

    def describe(self) -> str:
        return (f"{len(self.activation_qdq)} activation QuantizeLinear, {len(self.weight_dq)} weight "
                f"DequantizeLinear, {len(self.cast_mul)} Cast+Mul weight dequantizations")


def find_existing_quantization(model: onnx.ModelProto) -> ExistingQuantization:
    """Find Q/DQ and Cast+Mul weight dequantization already in ``model``."""
    consts = _constants(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    found = ExistingQuantization()

    def int_const(t: str) -> bool:
        return t in consts and consts[t].dtype in _INT_TYPES

    def cast_of_int(t: str) -> bool:
        n = producer.get(t)
        if n is None:
            return False
        if n.op_type == "Cast":
            return int_const(n.input[0])
        if n.op_type == "Sub" and len(n.input) == 2:  # (q - zero point)
            return cast_of_int(n.input[0]) and n.input[1] in consts
        return False

    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input and n.input[0] not in consts:
            found.activation_qdq.append(n.name or n.output[0])
        elif n.op_type == "DequantizeLinear" and n.input and n.input[0] in consts:
            found.weight_dq.append(n.output[0])
        elif n.op_type == "Mul" and len(n.input) == 2:
            a, b = n.input
            if (cast_of_int(a) and b in consts) or (cast_of_int(b) and a in consts):
                found.cast_mul.append(n.output[0])
    return found


def refuse_activation_qdq(existing: ExistingQuantization) -> None:
    if existing.activation_qdq:
        raise QuantizationError(
            f"The model is already INT8-quantized: it has {len(existing.activation_qdq)} QuantizeLinear nodes on "
            f"activations (e.g. {existing.activation_qdq[0]!r}). Build it as it is (TensorRT reads explicit "
            "Q/DQ; ONNX Runtime runs it), or calibrate and quantize the FP32 model it was made from.")


def _cast_mul_as_dq(model: onnx.ModelProto, existing: ExistingQuantization) -> int:
    """Rewrite ``Mul(Cast(int8 w), scale)`` into ``DequantizeLinear(w, scale, 0)`` where the scale is
    one value or one per output channel: the same float weights, in the form TensorRT fuses.
    Returns how many were rewritten; the others stay as they are (float weights)."""
    consts = _constants(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    done = 0
    for t in existing.cast_mul:
        mul = producer[t]
        a, b = mul.input
        cast, scale_name = (producer.get(a), b) if a not in consts else (producer.get(b), a)
        if cast is None or cast.op_type != "Cast" or cast.input[0] not in inits or scale_name not in consts:
            continue  # a zero-point Sub: asymmetric weights have no TensorRT int8 form; keep as is
        q = consts[cast.input[0]]
        s = np.asarray(consts[scale_name], np.float32)
        if q.dtype != np.int8 or not s.size or (s <= 0).any():
            continue
        axis: int | None = None
        if s.size > 1:
            if s.ndim > q.ndim:
                continue
            sh = (1,) * (q.ndim - s.ndim) + s.shape
            big = [i for i, d in enumerate(sh) if d != 1]
            if len(big) != 1 or sh[big[0]] != q.shape[big[0]]:
                continue
            axis = big[0]
        scale_flat = s.reshape(-1) if axis is not None else s.reshape(())
        sn = f"{t}_trt_edge_scale"
        zn = f"{t}_trt_edge_zero_point"
        model.graph.initializer.extend([
            numpy_helper.from_array(scale_flat.astype(np.float32), sn),
            numpy_helper.from_array(np.zeros(scale_flat.shape, np.int8), zn)])
        attrs = {"axis": axis} if axis is not None else {}
        dq = helper.make_node("DequantizeLinear", [cast.input[0], sn, zn], [t],
                              name=mul.name or f"{t}_DequantizeLinear", **attrs)
        mul.CopyFrom(dq)
        done += 1
    if done:
        used = {i for n in model.graph.node for i in n.input}
        keep = [n for n in model.graph.node if n.op_type != "Cast" or any(o in used for o in n.output)]
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return done


@dataclasses.dataclass
class QuantizeOptions:
    """What :func:`quantize_qdq` quantizes and how.

    ``op_types``: compute ops whose inputs get Q/DQ. ``residual_add``/``pooling``/
    ``concat``: the fusion helpers TensorRT needs. ``activation_matmul``: also
    quantize MatMuls whose both inputs are activations (attention Q.K^T, P.V).
    ``exclude_nodes``/``exclude_op_types``: keep these in float (e.g. the worst
    layers found by :func:`trt_edge.quant.sensitivity.layer_sensitivity`).
    ``per_channel``: per-output-channel weight scales (else one scale per weight).
    ``target``: "tensorrt" (inputs only, float bias) or "onnxruntime" (plus output
    Q/DQ and int32 bias, so ONNX Runtime runs int8 kernels).
    ``check_model_hash``: refuse ranges calibrated on another model.
    ``ort_scheme``: how the ``onnxruntime`` target stores weights: "auto" (the default: int8
    weights where ONNX Runtime's u8s8 kernels cannot saturate, uint8 with zero point 128, the
    same grid, on x86 without VNNI; see :mod:`trt_edge.quant.cpu`), "u8s8" or "u8u8".
    ``bias_correction``: where the ranges carry the calibration data's per-channel input means
    (``settings["channel_means"]``, recorded by :func:`~trt_edge.quant.calibrate`), subtract the
    mean output shift the weight rounding causes, ``(W_q - W) E[x]``, from each Conv/Gemm bias
    (analytic bias correction, Nagel et al. 2019). It matters most for depthwise convolutions,
    whose 9-weight channels do not average their rounding errors out.
    """

    op_types: tuple[str, ...] = COMPUTE_OPS
    residual_add: bool = True
    pooling: bool = True
    concat: bool = True
    activation_matmul: bool = True
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    per_channel: bool = True
    target: str = "tensorrt"
    check_model_hash: bool = True
    check: bool = True
    ort_scheme: str = "auto"
    bias_correction: bool = True

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise QuantizationError(f"target must be one of {TARGETS}, got {self.target!r}.")
        if self.ort_scheme not in ORT_SCHEMES:
            raise QuantizationError(f"ort_scheme must be one of {ORT_SCHEMES}, got {self.ort_scheme!r}.")
        self.op_types = tuple(self.op_types)
        self.exclude_nodes = tuple(self.exclude_nodes)
        self.exclude_op_types = tuple(self.exclude_op_types)


@dataclasses.dataclass
class WeightSlot:
    node: str
    input_index: int
    tensor: str
    axis: int | None  # None: per-tensor


@dataclasses.dataclass
class QdqPlan:
    """Where Q/DQ go, computed from the graph alone (no ranges needed).

    ``activations``: tensor -> consumer slots ``(node_name, input_index)``;
    ``weights``: weight slots; ``outputs``: compute-op outputs to quantize
    (onnxruntime target); ``shared_scale``: groups of tensors (Concat inputs) that
    must share one scale; ``quantized_nodes``: the nodes that will run in INT8.
    """

    activations: dict[str, list[tuple[str, int]]]
    weights: list[WeightSlot]
    outputs: list[str]
    shared_scale: list[list[str]]
    quantized_nodes: list[str]
    biases: list[tuple[str, int, str, str]]  # node, input index, activation, weight
    nonnegative: set[str] = dataclasses.field(default_factory=set)  # ORT target: uint8, zero point 0

    def activation_tensors(self) -> list[str]:
        return list(dict.fromkeys(list(self.activations) + self.outputs))


def _node_names(model: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (slots are addressed by node name)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)


class _Constants(dict):  # type: ignore[type-arg]
    """The model's constant tensors (initializers, ``Constant`` values) by name, converted to
    NumPy only when read: the plan asks about a few dozen of them, and converting all of a
    transformer's 90 MB of weights up front cost ~0.25 s each time a plan was made."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        self._protos: dict[str, onnx.TensorProto] = {i.name: i for i in model.graph.initializer}
        for n in model.graph.node:
            if n.op_type == "Constant" and n.output:
                for a in n.attribute:
                    if a.name == "value":
                        self._protos[n.output[0]] = a.t

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or name in self._protos

    def __missing__(self, name: str) -> np.ndarray:
        if name not in self._protos:
            raise KeyError(name)
        value = numpy_helper.to_array(self._protos[name])
        self[name] = value
        return value

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[name] if name in self else default

    def kind_and_ndim(self, name: str) -> tuple[str, int]:
        """NumPy dtype kind and rank of a constant, read off its proto: placement decisions need
        no more, and converting a transformer's weights only for this cost ~0.04 s a plan."""
        if dict.__contains__(self, name):
            v = dict.__getitem__(self, name)
            return v.dtype.kind, v.ndim
        proto = self._protos[name]
        if proto.data_type in (onnx.TensorProto.UNDEFINED, onnx.TensorProto.STRING):
            v = self[name]
            return v.dtype.kind, v.ndim
        return helper.tensor_dtype_to_np_dtype(proto.data_type).kind, len(proto.dims)


def _constants(model: onnx.ModelProto) -> _Constants:
    return _Constants(model)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _weight_axis(node: onnx.NodeProto, idx: int, ndim: int, per_channel: bool) -> int | None:
    if not per_channel or ndim < 2:
        return None
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1 if _attr(node, "group", 1) == 1 else None
    if node.op_type == "Gemm":
        if idx == 1:
            return 0 if _attr(node, "transB", 0) else 1
        return None
    if node.op_type == "MatMul" and idx == 1 and ndim == 2:
        return 1
    return None


def plan_qdq(model: onnx.ModelProto, options: QuantizeOptions | None = None) -> QdqPlan:
    """Decide Q/DQ placement for ``model`` (nodes must be named: see :func:`quantize_qdq`)."""
    opt = options or QuantizeOptions()
    g = model.graph
    types = tensor_types(model)
    consts = _constants(model)
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}
    dequantized_weights = find_existing_quantization(model).dequantized_weights

    def is_float_act(t: str) -> bool:
        return bool(t) and t not in consts and types.get(t, onnx.TensorProto.FLOAT) in FLOAT_TYPES \
            and (t in producer or t in {i.name for i in g.input})

    def excluded(n: onnx.NodeProto) -> bool:
        return n.name in opt.exclude_nodes or n.op_type in opt.exclude_op_types

    def from_conv(t: str, depth: int = 0) -> bool:
        n = producer.get(t)
        if n is None or depth > 4:
            return False
        if n.op_type in ("Conv", "ConvTranspose"):
            return True
        return n.op_type in _PASS_THROUGH and bool(n.input) and from_conv(n.input[0], depth + 1)

    nonneg: set[str] = set()

    def _ort_output(y: str) -> str | None:
        """The tensor to quantize after a compute op for ONNX Runtime: its output, or the output
        of a following ReLU/Clip(0, x) quantized as uint8 with zero point 0, which makes the
        activation redundant so ORT fuses op + activation into one int8 kernel."""
        if y in graph_outputs:
            return None
        cons = consumers.get(y, [])
        if len(cons) == 1 and not excluded(cons[0]) and cons[0].output[0] not in graph_outputs:
            c = cons[0]
            lo = consts.get(c.input[1]) if c.op_type == "Clip" and len(c.input) > 1 and c.input[1] else None
            if c.op_type == "Relu" or (c.op_type == "Clip" and lo is not None and float(lo) == 0.0):
                nonneg.add(c.output[0])
                return c.output[0]
        return y

    acts: dict[str, list[tuple[str, int]]] = {}
    weights: list[WeightSlot] = []
    outputs: list[str] = []
    shared: list[list[str]] = []
    biases: list[tuple[str, int, str, str]] = []
    qnodes: list[str] = []

    def add_act(t: str, n: onnx.NodeProto, i: int) -> None:
        acts.setdefault(t, []).append((n.name, i))

    for n in g.node:
        if excluded(n):
            continue
        if n.op_type in opt.op_types and n.op_type in COMPUTE_OPS:
            if len(n.input) < 2:
                continue
            x, w = n.input[0], n.input[1]
            if n.op_type == "MatMul" and not (w in consts) and not opt.activation_matmul:
                continue
            if not is_float_act(x) and x not in consts:
                continue
            if n.op_type == "Gemm" and _attr(n, "transA", 0):
                continue  # rare; a transposed activation input would need its own rules
            if x in consts:
                continue  # constant first operand: nothing to calibrate, leave float
            if w in dequantized_weights:
                # weight-only INT8 already in the model: keep its grid, quantize the activation
                add_act(x, n, 0)
                qnodes.append(n.name)
                continue
            add_act(x, n, 0)
            if w in consts:
                kind, ndim = consts.kind_and_ndim(w)
                if kind != "f":
                    continue
                weights.append(WeightSlot(n.name, 1, w, _weight_axis(n, 1, ndim, opt.per_channel)))
            elif is_float_act(w):
                add_act(w, n, 1)
            else:
                continue
            qnodes.append(n.name)
            if len(n.input) > 2 and n.input[2] in consts and w in consts:
                biases.append((n.name, 2, x, w))
            if opt.target == "onnxruntime" and w in consts and n.op_type != "MatMul":
                # Output Q/DQ only after Conv/Gemm (ORT then runs QLinearConv/QGemm). A MatMul keeps a
                # float output: ORT still runs it in int8 (MatMulIntegerToFloat), and requantizing
                # transformer outputs (outlier channels, attention scores) measurably costs accuracy.
                out = _ort_output(n.output[0])
                if out is not None:
                    outputs.append(out)
        elif n.op_type == "Add" and opt.residual_add and len(n.input) == 2:
            a, b = n.input
            if is_float_act(a) and is_float_act(b) and (from_conv(a) or from_conv(b)):
                # TensorRT fuses "Conv -> Add" when the Conv's output feeds only the Add: that
                # input needs no Q/DQ (it stays in the fused kernel's accumulator); the other,
                # the skip branch, is quantized (NVIDIA ModelOpt's placement). Measured on static
                # MobileNetV2, held-out crops: 0.72 -> 0.76 top-1 agreement vs both inputs.
                fused = [i for i, t in enumerate((a, b)) if opt.target == "tensorrt" and t in producer
                         and producer[t].op_type == "Conv" and not excluded(producer[t])
                         and len(consumers.get(t, [])) == 1 and t not in graph_outputs]
                keep_float = fused[-1] if fused else None
                for i, t in enumerate((a, b)):
                    if i != keep_float:
                        add_act(t, n, i)
                qnodes.append(n.name)
        elif n.op_type in POOL_OPS and opt.pooling and n.input and is_float_act(n.input[0]):
            add_act(n.input[0], n, 0)
            qnodes.append(n.name)
            if opt.target == "onnxruntime" and n.op_type == "MaxPool" and n.output[0] not in graph_outputs:
                # max commutes with quantization: same scale in and out lets ORT run it on int8
                outputs.append(n.output[0])
                shared.append([n.input[0], n.output[0]])
                if n.input[0] in nonneg:
                    nonneg.add(n.output[0])
        elif n.op_type == "Concat" and opt.concat and n.input and all(is_float_act(t) for t in n.input):
            # Only where the concatenation feeds quantized ops: otherwise Q/DQ here is pure cost.
            feeds_quant = any(c.op_type in opt.op_types or c.op_type in POOL_OPS
                              for c in consumers.get(n.output[0], []))
            if feeds_quant:
                for i, t in enumerate(n.input):
                    add_act(t, n, i)
                shared.append(list(dict.fromkeys(n.input)))
                qnodes.append(n.name)
    if opt.target == "tensorrt":
        biases = []
    return QdqPlan(acts, weights, list(dict.fromkeys(outputs)), shared, qnodes, biases, nonneg)


@dataclasses.dataclass
class QdqReport:
    quantized_nodes: list[str]
    activation_tensors: int
    weight_tensors: int
    skipped_no_range: list[str]
    scheme: str = "s8s8"   # activation x weight storage: s8s8 (TensorRT), u8s8 or u8u8 (ONNX Runtime)


def _activation_amax(plan: QdqPlan, amax_of: Mapping[str, float]) -> tuple[dict[str, float], list[str]]:
    """Per-tensor amax for every planned activation, with shared-scale groups set to their max.

    ``amax_of``: tensor -> calibrated amax. Returns ``(amax, tensors without a range)``.
    """
    amax: dict[str, float] = {}
    skipped: list[str] = []
    for t in plan.activation_tensors():
        if t in amax_of:
            amax[t] = max(float(amax_of[t]), MIN_AMAX)
        else:
            skipped.append(t)
    for group in plan.shared_scale:
        present = [t for t in group if t in amax]
        if present:
            shared_amax = max(amax[t] for t in present)
            for t in present:
                amax[t] = shared_amax
    return amax, skipped


def _settle_shared_grids(plan: QdqPlan) -> None:
    """A shared grid must be one grid: the non-negative (uint8) one only if every member is."""
    for group in plan.shared_scale:
        if any(t in plan.nonnegative for t in group) and not all(t in plan.nonnegative for t in group):
            plan.nonnegative.difference_update(group)


def _activation_scale(plan: QdqPlan, amax: Mapping[str, float], t: str) -> float:
    return float(amax[t] / 255.0) if t in plan.nonnegative else float(symmetric_scale(amax[t]))


@dataclasses.dataclass
class ScaleProbe:
    """A Q/DQ model whose activation scales are graph inputs: one ONNX Runtime session
    evaluates any set of ranges (used to choose calibration methods by their effect on
    the model outputs). Weights are quantized as in :func:`quantize_qdq` and stored
    dequantized; biases stay float (an int32 bias would need a fixed activation scale). (What
    ONNX Runtime then runs differs on Conv/Gemm: see :class:`~trt_edge.quant.select.ScoringSession`.)"""

    model: onnx.ModelProto
    plan: QdqPlan
    scale_inputs: dict[str, str]   # activation tensor -> scalar float graph input
    # initializers kept out of ``model`` (``build_scale_probe(external_min_bytes=...)``): name -> value;
    # ``model`` holds an external-data placeholder (name, type, shape, no data) for each
    external: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def feeds(self, amax_of: Mapping[str, float]) -> dict[str, np.ndarray]:
        """The scale inputs for per-tensor ``amax_of`` (every planned tensor must be there)."""
        amax, missing = _activation_amax(self.plan, amax_of)
        if missing:
            raise QuantizationError(f"No range for {len(missing)} probed tensors, e.g. {missing[:3]}.")
        return {name: np.array(_activation_scale(self.plan, amax, t), np.float32)
                for t, name in self.scale_inputs.items()}


@dataclasses.dataclass
class _ProbeRecord:
    """What :func:`quantize_qdq` reports back when it builds a probe (its plan, its scale inputs)."""

    plan: QdqPlan | None = None
    scale_inputs: dict[str, str] = dataclasses.field(default_factory=dict)
    external_min_bytes: int | None = None   # None: every initializer stays in the model
    external: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def initializer(self, value: np.ndarray, name: str) -> onnx.TensorProto:
        """``value`` as the initializer ``name``: in the model, or kept aside with a placeholder."""
        if self.external_min_bytes is None or value.nbytes < self.external_min_bytes:
            return numpy_helper.from_array(value, name)
        self.external[name] = value
        return _external_placeholder(name, value.dtype, value.shape)


EXTERNAL_LOCATION = "trt_edge_in_memory"  # never a file: the data is handed to ONNX Runtime directly


def _external_placeholder(name: str, dtype: np.dtype, shape: tuple[int, ...],
                          tensor: onnx.TensorProto | None = None) -> onnx.TensorProto:
    """An initializer that names its type and shape but holds no data (an external-data
    reference ONNX Runtime resolves from ``SessionOptions.add_external_initializers``)."""
    t = tensor if tensor is not None else onnx.TensorProto()
    t.name = name
    t.data_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    del t.dims[:]
    t.dims.extend(int(d) for d in shape)
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
        t.ClearField(field)
    t.data_location = onnx.TensorProto.EXTERNAL
    del t.external_data[:]
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    for key, value in (("location", EXTERNAL_LOCATION), ("offset", "0"), ("length", str(nbytes))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def build_scale_probe(model: onnx.ModelProto, options: QuantizeOptions | None = None,
                      channel_means: Mapping[str, np.ndarray] | None = None, *,
                      external_min_bytes: int | None = None) -> ScaleProbe:
    """:class:`ScaleProbe` for ``model`` with ``options``' placement (no checker run).
    ``channel_means``: bias correction's statistics (as in the ranges), so the probe scores the
    model that will be deployed. ``external_min_bytes``: numeric initializers of at least this
    size are kept out of the probe model (``ScaleProbe.external``, the model holds placeholders):
    a session then takes them as arrays instead of serializing and parsing every weight
    (MiniLM: 86 MB, ~0.35 s of the probe's build)."""
    opt = dataclasses.replace(options or QuantizeOptions(), check=False, check_model_hash=False)
    record = _ProbeRecord(external_min_bytes=external_min_bytes)
    settings = {"channel_means": dict(channel_means)} if channel_means else {}
    probe = quantize_qdq(model, CalibrationResult(ranges={}, model_hash="", settings=settings), opt, probe=record)
    assert record.plan is not None  # set by quantize_qdq
    # the dequantized weights were kept aside as quantize_qdq made them (no protobuf round trip);
    # the model's own remaining weights (embeddings, biases, norms) are moved out here
    if external_min_bytes is not None:
        for init in probe.graph.initializer:
            if init.data_location == onnx.TensorProto.EXTERNAL or init.name in record.external:
                continue
            if init.data_type in (onnx.TensorProto.UNDEFINED, onnx.TensorProto.STRING):
                continue
            dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
            if dtype.kind in "fiub" and int(np.prod(init.dims, dtype=np.int64)) * dtype.itemsize >= external_min_bytes:
                value = numpy_helper.to_array(init)
                record.external[init.name] = value
                _external_placeholder(init.name, value.dtype, value.shape, tensor=init)
        # only what the model still names (ONNX Runtime refuses an array it has no placeholder for)
        present = {i.name for i in probe.graph.initializer}
        record.external = {k: v for k, v in record.external.items() if k in present}
    return ScaleProbe(probe, record.plan, record.scale_inputs, record.external)


def quantize_qdq(model: onnx.ModelProto | str, ranges: CalibrationResult,
                 options: QuantizeOptions | None = None,
                 report: list[QdqReport] | None = None, *, warn_missing: bool = True,
                 probe: _ProbeRecord | None = None) -> onnx.ModelProto:
    """Return a copy of ``model`` with explicit int8 Q/DQ nodes.

    Guarantees: the result passes ``onnx.checker`` (full check), keeps the
    model's inputs and outputs (names, types), uses opset >= 13 per-axis
    DequantizeLinear for weights, and zero points are 0. Raises
    :class:`~trt_edge.errors.ArtifactError` if ``ranges`` were calibrated on
    another model (``check_model_hash``). Activations without a range are left
    float (logged unless ``warn_missing`` is False, and listed in ``report``). ``probe``: internal, see
    :func:`build_scale_probe` (every planned activation gets a Q/DQ pair whose scale is a
    graph input; ``ranges`` is not read; the plan and the scale inputs are recorded there).
    """
    opt = options or QuantizeOptions()
    if not isinstance(model, onnx.ModelProto):
        from ..artifacts import load_onnx
        model = load_onnx(model)
    if opt.check_model_hash:
        ranges.check_model(expected_hash=canonical_model_hash(model))
    existing = find_existing_quantization(model)
    refuse_activation_qdq(existing)
    model, _ = upgrade_opset(model)  # ranges are checked against the model as given, above
    m = onnx.ModelProto()
    m.CopyFrom(model)
    _node_names(m)
    if existing.cast_mul and probe is None:
        n = _cast_mul_as_dq(m, existing)
        log.info("kept the model's weight-only INT8 (%s); %d Cast+Mul dequantizations rewritten as "
                 "DequantizeLinear", existing.describe(), n)
    elif existing.weight_dq and probe is None:
        log.info("kept the model's weight-only INT8 (%s); quantizing its activations", existing.describe())
    scheme = ort_int8_scheme(opt.ort_scheme)[0] if opt.target == "onnxruntime" else "s8s8"
    plan = plan_qdq(m, opt)
    g = m.graph
    first_input = {n.name: n.input[0] for n in g.node if n.input}  # before Q/DQ rewires them
    consts = _constants(m)
    init_names = {i.name for i in g.initializer}

    # ------------------------------------------------------------ activation scales
    _settle_shared_grids(plan)
    if probe is not None:
        probe.plan = plan
        # placeholders: the probe's scales are graph inputs, so every planned tensor gets its pair
        amax, skipped = _activation_amax(plan, {t: 1.0 for t in plan.activation_tensors()})
    else:
        amax, skipped = _activation_amax(plan, {t: ranges.amax(t) for t in plan.activation_tensors()
                                                if t in ranges})
    if skipped and warn_missing:
        log.warning("%d tensors have no calibrated range and stay float: %s", len(skipped),
                    ", ".join(skipped[:8]) + (" ..." if len(skipped) > 8 else ""))

    new_inits: list[onnx.TensorProto] = []
    names_taken = {i.name for i in g.initializer} | {o for n in g.node for o in n.output} | \
        {i.name for i in g.input}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in names_taken:
            name, k = f"{base}_{k}", k + 1
        names_taken.add(name)
        return name

    if opt.target == "onnxruntime":
        # uint8 with zero point 128 represents exactly the int8/zero-point-0 grid (q_u8 = q_s8 + 128)
        # and lets x86 ONNX Runtime use its fast u8s8 kernels; TensorRT needs the int8 form.
        zp8 = fresh("trt_edge_zero_point_uint8")
        new_inits.append(numpy_helper.from_array(np.array(128, np.uint8), zp8))
    else:
        zp8 = fresh("trt_edge_zero_point_int8")
        new_inits.append(numpy_helper.from_array(np.array(0, np.int8), zp8))

    zp_u8_min: list[str] = []

    def act_scale(t: str) -> float:
        return _activation_scale(plan, amax, t)

    def act_qdq(t: str) -> tuple[list[onnx.NodeProto], str]:
        scale = fresh(f"{t}_scale")
        if probe is not None:
            probe.scale_inputs[t] = scale
            g.input.append(helper.make_tensor_value_info(scale, onnx.TensorProto.FLOAT, []))
        else:
            new_inits.append(numpy_helper.from_array(np.array(act_scale(t), np.float32), scale))
        zp = zp8
        if t in plan.nonnegative:
            if not zp_u8_min:
                zp_u8_min.append(fresh("trt_edge_zero_point_uint8_min"))
                new_inits.append(numpy_helper.from_array(np.array(0, np.uint8), zp_u8_min[0]))
            zp = zp_u8_min[0]
        q_out, dq_out = fresh(f"{t}_quantized"), fresh(f"{t}_dequantized")
        nodes = [helper.make_node("QuantizeLinear", [t, scale, zp], [q_out], name=fresh(f"{t}_QuantizeLinear")),
                 helper.make_node("DequantizeLinear", [q_out, scale, zp], [dq_out],
                                  name=fresh(f"{t}_DequantizeLinear"))]
        return nodes, dq_out

    by_name = {n.name: n for n in g.node}
    # After-producer emission of activation Q/DQ; consumers rewired per slot.
    emit_after: dict[str, list[onnx.NodeProto]] = {}
    emit_first: list[onnx.NodeProto] = []
    producer = {o: n.name for n in g.node for o in n.output}
    for t in plan.activation_tensors():
        if t not in amax:
            continue
        nodes, dq = act_qdq(t)
        slots = plan.activations.get(t, [])
        if t in plan.outputs:  # onnxruntime target: every consumer reads the quantized output
            slots = [(c.name, i) for c in g.node for i, x in enumerate(c.input) if x == t]
        for node_name, idx in slots:
            by_name[node_name].input[idx] = dq
        if t in producer:
            emit_after.setdefault(producer[t], []).extend(nodes)
        else:
            emit_first.extend(nodes)

    # ------------------------------------------------------------ weights
    channel_means = {k: np.asarray(v, np.float64) for k, v in
                     (ranges.settings.get("channel_means") or {}).items()} if opt.bias_correction else {}
    corrected: list[str] = []

    def _correct_bias(node: onnx.NodeProto, eps: np.ndarray, mean: np.ndarray) -> None:
        shift = _bias_shift(node, eps, mean)
        if shift is None or not np.isfinite(shift).all():
            return
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] not in consts:
                return
            b = consts[node.input[2]].astype(np.float64)
            if b.shape != shift.shape:
                return
        elif opt.target == "onnxruntime":
            return  # no bias to fold the correction into an int32 bias: leave it
        else:
            b = np.zeros(shift.shape, np.float64)
        name = fresh(f"{node.name}_bias_corrected")
        new_b = (b - shift).astype(np.float32)
        new_inits.append(numpy_helper.from_array(new_b, name))
        consts[name] = new_b
        if len(node.input) > 2:
            node.input[2] = name
        else:
            node.input.append(name)
        corrected.append(node.name)

    weight_dq: dict[tuple[str, int | None], str] = {}
    weight_scales: dict[str, np.ndarray] = {}
    for slot in plan.weights:
        key = (slot.tensor, slot.axis)
        if key not in weight_dq:
            w = consts[slot.tensor].astype(np.float32)
            if slot.axis is None:
                s = symmetric_scale(max(float(np.abs(w).max()), MIN_AMAX)).reshape(())
                q = np.clip(np.rint(w / s), -127, 127).astype(np.int8)
                zp = np.array(0, np.int8)
            else:
                s = symmetric_scale(per_channel_amax(w, slot.axis))
                shape = [1] * w.ndim
                shape[slot.axis] = -1
                q = np.clip(np.rint(w / s.reshape(shape)), -127, 127).astype(np.int8)
                zp = np.zeros(s.shape, np.int8)
            means = channel_means.get(first_input.get(slot.node, "")) if opt.bias_correction else None
            if means is not None:
                sb = s if slot.axis is None else s.reshape(shape)
                _correct_bias(by_name[slot.node], q.astype(np.float64) * sb - w.astype(np.float64), means)
            if probe is not None:
                # the probe scores activation ranges: its weights are the dequantized values,
                # precomputed (what DequantizeLinear gives, float(q) * scale, without the per-run cost)
                dq = fresh(f"{slot.tensor}_dequantized")
                sb = s if slot.axis is None else s.reshape(shape)
                new_inits.append(probe.initializer((q.astype(np.float32) * sb).astype(np.float32), dq))
                weight_dq[key] = dq
                weight_scales[dq] = s
                by_name[slot.node].input[slot.input_index] = dq
                continue
            if scheme == "u8u8":  # the same grid as uint8 with zero point 128 (no u8s8 saturation)
                q = (q.astype(np.int16) + 128).astype(np.uint8)
                zp = np.full(zp.shape, 128, np.uint8)
            qn, sn, zn = fresh(f"{slot.tensor}_quantized"), fresh(f"{slot.tensor}_scale"), \
                fresh(f"{slot.tensor}_zero_point")
            new_inits += [numpy_helper.from_array(q, qn), numpy_helper.from_array(s, sn),
                          numpy_helper.from_array(zp, zn)]
            dq = fresh(f"{slot.tensor}_dequantized")
            attrs = {"axis": slot.axis} if slot.axis is not None else {}
            emit_first.append(helper.make_node("DequantizeLinear", [qn, sn, zn], [dq],
                                               name=fresh(f"{slot.tensor}_DequantizeLinear"), **attrs))
            weight_dq[key] = dq
            weight_scales[dq] = s
        by_name[slot.node].input[slot.input_index] = weight_dq[key]

    # ------------------------------------------------------------ int32 biases (onnxruntime target)
    for node_name, idx, x, w in plan.biases if probe is None else []:
        node = by_name[node_name]
        wdq = node.input[1]
        if x not in amax or wdq not in weight_scales:
            continue
        b = consts[node.input[idx]].astype(np.float64)
        s = float(np.float32(act_scale(x))) * weight_scales[wdq].astype(np.float64)
        s = np.broadcast_to(s, b.shape) if s.ndim == 0 else s
        if s.shape != b.shape:
            continue
        bq = np.clip(np.rint(b / s), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
        qn, sn, zn = fresh(f"{node.input[idx]}_quantized"), fresh(f"{node.input[idx]}_scale"), \
            fresh(f"{node.input[idx]}_zero_point")
        new_inits += [numpy_helper.from_array(bq, qn), numpy_helper.from_array(s.astype(np.float32), sn),
                      numpy_helper.from_array(np.zeros(b.shape, np.int32), zn)]
        dq = fresh(f"{node.input[idx]}_dequantized")
        emit_first.append(helper.make_node("DequantizeLinear", [qn, sn, zn], [dq], axis=0,
                                           name=fresh(f"{node.input[idx]}_DequantizeLinear")))
        node.input[idx] = dq

    # ------------------------------------------------------------ rebuild, drop dead weights
    ordered: list[onnx.NodeProto] = list(emit_first)
    for n in g.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)  # detach from the field cleared below
        ordered.append(copy)
        ordered.extend(emit_after.get(n.name, []))
    del g.node[:]
    g.node.extend(ordered)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    # delete the dead ones in place: re-adding the kept ones would copy every weight again
    # (protobuf's extend copies messages; ~0.15 s on a 90 MB transformer)
    for k in reversed([k for k, i in enumerate(g.initializer) if i.name not in used]):
        del g.initializer[k]
    dropped = init_names - {i.name for i in g.initializer}
    if dropped:
        real_inputs = [i for i in g.input if i.name not in dropped]
        del g.input[:]
        g.input.extend(real_inputs)
    m.metadata_props.append(onnx.StringStringEntryProto(key="trt_edge.quantization",
                                                         value=f"int8-qdq target={opt.target} scheme={scheme}"))
    m.metadata_props.append(onnx.StringStringEntryProto(key="trt_edge.ranges_model_sha256",
                                                         value=ranges.model_hash))
    if opt.check:
        try:
            onnx.checker.check_model(m, full_check=True)
        except Exception as exc:  # noqa: BLE001 - checker raises several types
            raise QuantizationError(f"The quantized model fails the ONNX checker: {exc}") from exc
    if report is not None:
        report.append(QdqReport(plan.quantized_nodes, len(amax), len(weight_dq), skipped, scheme))
    log.info("Q/DQ: %d nodes quantized, %d activation and %d weight tensors", len(plan.quantized_nodes),
             len(amax), len(weight_dq))
    return m


def planning_view(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` at opset >= 13 with every node named, as :func:`plan_qdq` reads it: the model
    itself when nothing needs changing (planning only reads it; copying a transformer's 90 MB
    of weights for that cost ~0.07 s per plan), else a converted or named copy."""
    m, converted = upgrade_opset(model)
    if all(n.name for n in m.graph.node):
        return m
    if converted is None:  # the caller's model: name a copy
        m = onnx.ModelProto()
        m.CopyFrom(model)
    _node_names(m)
    return m


def bias_correction_inputs(model: onnx.ModelProto, options: QuantizeOptions | None = None, *,
                           plan: QdqPlan | None = None) -> dict[str, int]:
    """The activations whose per-channel means bias correction needs: ``tensor -> channel axis``
    (the input of every Conv/Gemm with constant weights that :func:`quantize_qdq` quantizes).
    ``plan``: :func:`plan_qdq` of :func:`planning_view` ``(model)``, if the caller has it."""
    m = planning_view(model)
    plan = plan or plan_qdq(m, options)
    by_name = {n.name: n for n in m.graph.node}
    out: dict[str, int] = {}
    for slot in plan.weights:
        node = by_name[slot.node]
        if node.op_type in ("Conv", "Gemm"):
            out.setdefault(node.input[0], 1)
    return out


def _bias_shift(node: onnx.NodeProto, eps: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """Mean output shift per output channel that the weight error ``eps`` causes for inputs of
    per-channel mean ``mean`` (None where the shapes do not fit: no correction)."""
    mean = np.asarray(mean, np.float64).reshape(-1)
    if node.op_type == "Conv":
        cout, cin_g = eps.shape[0], eps.shape[1]
        g = _attr(node, "group", 1)
        if cin_g * g != mean.size or cout % g:
            return None
        eps_sum = eps.reshape(cout, cin_g, -1).sum(axis=2)
        m_per_out = mean.reshape(g, cin_g)[np.arange(cout) // (cout // g)]
        return np.sum(eps_sum * m_per_out, axis=1)
    if node.op_type == "Gemm" and eps.ndim == 2:
        w_kn = eps.T if _attr(node, "transB", 0) else eps
        if w_kn.shape[0] != mean.size:
            return None
        alpha = next((a.f for a in node.attribute if a.name == "alpha"), 1.0)
        beta = next((a.f for a in node.attribute if a.name == "beta"), 1.0)
        if beta == 0.0:
            return None
        return alpha * (mean @ w_kn) / beta
    return None


def tensors_to_calibrate(model: onnx.ModelProto, options: QuantizeOptions | None = None) -> list[str]:
    """The activations :func:`quantize_qdq` will need ranges for (with the same options)."""
    return plan_qdq(planning_view(model), options).activation_tensors()


def quantized_node_names(model: onnx.ModelProto, options: QuantizeOptions | None = None) -> list[str]:
    return plan_qdq(planning_view(model), options).quantized_nodes


def count_ops(model: onnx.ModelProto, ops: Iterable[str] = ("QuantizeLinear", "DequantizeLinear")) -> dict[str, int]:
    wanted = set(ops)
    out = {o: 0 for o in wanted}
    for n in model.graph.node:
        if n.op_type in wanted:
            out[n.op_type] += 1
    return out
