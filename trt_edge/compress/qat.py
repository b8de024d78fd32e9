"""Quantization-aware training that exports to the precision path's own Q/DQ ONNX.

The scheme is exactly :mod:`trt_edge.quant`'s (``quant/qdq.py``): int8, symmetric, zero point
0; weights per output channel (or per tensor) with ``scale = max|w| / 127`` and values clipped to
[-127, 127]; activations per tensor with ``scale = amax / 127`` (float64 division, then float32,
as ``symmetric_scale``) and ONNX ``QuantizeLinear`` semantics (round half to even, saturate to
[-128, 127]). Placement is not re-implemented: :func:`prepare_qat` exports the model, asks
:func:`trt_edge.quant.qdq.plan_qdq` where TensorRT needs Q/DQ (Conv/Gemm/MatMul inputs, pooling
inputs, both inputs of residual Adds, Concat inputs sharing one scale) and puts a fake-quant at
each of those places in a ``torch.fx`` copy of the model (ONNX tensors are matched to FX nodes by
their values on real inputs). BatchNorm is folded into the convolutions first, because the
engine quantizes the folded weights (both exporters fold BN).

Activation ranges start from our calibrator's (:func:`trt_edge.quant.calibrate`) and are
learned (the gradient of the scale is LSQ's, Esser et al. 2020); rounding passes gradients
straight through (zero outside the clipping range). :meth:`QatModel.export` writes the float
model, then calls :func:`trt_edge.quant.quantize_qdq` with the LEARNED ranges, so a QAT model is
the same Q/DQ graph a PTQ one is and builds the same way; it then checks the file against the
fake-quantized torch model in ONNX Runtime.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import operator
import os
import tempfile
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .._lazy import require
from ..errors import QuantizationError
from ..quant.calibrate import CalibrationOptions, calibrate
from ..quant.methods import MIN_AMAX
from ..quant.qdq import QuantizeOptions, _node_names, plan_qdq, quantize_qdq
from ..quant.ranges import CalibrationResult, TensorRange, canonical_model_hash
from .report import export_verified, ort_run

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QatOptions:
    """``per_channel``: per-output-channel weight scales (False: one per weight tensor, the
    "harsh" setting). ``learn_ranges``: train the activation ranges (else keep the calibrated
    ones). ``calibration``: how the initial ranges are calibrated (our calibrator's default:
    "auto"). ``match_samples``: inputs used to match ONNX tensors to FX nodes."""

    per_channel: bool = True
    learn_ranges: bool = True
    calibration: CalibrationOptions = dataclasses.field(
        default_factory=lambda: CalibrationOptions(show_progress=False))
    match_samples: int = 4


def _torch() -> Any:
    return require("torch", "quantization-aware training")


def _round_ste(x: Any) -> Any:
    torch = _torch()
    return (torch.round(x) - x).detach() + x


def _scale(amax: Any) -> Any:
    """amax / 127 computed in float64 then rounded to float32 (``symmetric_scale``)."""
    torch = _torch()
    return (torch.clamp(amax.to(torch.float64), min=MIN_AMAX) / 127.0).to(torch.float32)


@functools.lru_cache(maxsize=None)
def _classes() -> Any:
    """The torch module classes (defined on first use: importing this module needs no torch)."""
    torch = _torch()
    nn = torch.nn

    class ActFakeQuant(nn.Module):  # type: ignore[name-defined,misc]
        """Per-tensor activation fake-quant with a learnable amax (QuantizeLinear + DequantizeLinear)."""

        def __init__(self, amax: float, learn: bool = True):
            super().__init__()
            self.amax = nn.Parameter(torch.tensor(float(max(amax, MIN_AMAX)), dtype=torch.float32),
                                     requires_grad=learn)
            self.enabled = True

        def forward(self, x: Any) -> Any:
            if not self.enabled:
                return x
            s = _scale(self.amax)
            return torch.clamp(_round_ste(x / s), -128.0, 127.0) * s

    class WeightFakeQuant(nn.Module):  # type: ignore[name-defined,misc]
        """Weight fake-quant: scale = max|w| / 127 per output channel (``axis``) or per tensor
        (``axis=None``), values in [-127, 127]."""

        def __init__(self, axis: int | None):
            super().__init__()
            self.axis = axis
            self.enabled = True

        def scale(self, w: Any) -> Any:
            a = w.detach().abs()
            if self.axis is None:
                return _scale(a.max())
            dims = [d for d in range(w.ndim) if d != self.axis]
            shape = [1] * w.ndim
            shape[self.axis] = -1
            return _scale(a.amax(dim=dims)).reshape(shape)

        def forward(self, w: Any) -> Any:
            if not self.enabled:
                return w
            s = self.scale(w)
            return torch.clamp(_round_ste(w / s), -127.0, 127.0) * s

    class QatConv2d(nn.Conv2d):  # type: ignore[name-defined,misc]
        """A Conv2d whose weight goes through ``weight_quant`` (set by :func:`prepare_qat`)."""

        def forward(self, x: Any) -> Any:
            return self._conv_forward(x, self.weight_quant(self.weight), self.bias)

    class QatLinear(nn.Linear):  # type: ignore[name-defined,misc]
        """A Linear whose weight goes through ``weight_quant`` (set by :func:`prepare_qat`)."""

        def forward(self, x: Any) -> Any:
            return nn.functional.linear(x, self.weight_quant(self.weight), self.bias)

    class Recorder(torch.fx.Interpreter):  # type: ignore[name-defined,misc]
        def __init__(self, gm: Any):
            super().__init__(gm)
            self.values: dict[Any, Any] = {}

        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                self.values[n] = out.detach().clone()
            return out

    return types.SimpleNamespace(ActFakeQuant=ActFakeQuant, WeightFakeQuant=WeightFakeQuant,
                                 QatConv2d=QatConv2d, QatLinear=QatLinear, Recorder=Recorder,
                                 qat_class={nn.Conv2d: QatConv2d, nn.Linear: QatLinear})


def _category(node: Any, modules: dict[str, Any]) -> str | None:
    """What an FX user node is, in the ONNX op categories of our Q/DQ placement."""
    torch = _torch()
    nn = torch.nn
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, (nn.Conv2d, nn.Conv1d)):
            return "Conv"
        if isinstance(m, nn.Linear):
            return "Gemm"
        if isinstance(m, (nn.MaxPool2d, nn.MaxPool1d)):
            return "MaxPool"
        if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            return "AveragePool"
        return None
    if node.op == "call_function":
        f = node.target
        if f in (operator.add, operator.iadd, torch.add):
            return "Add"
        if f in (torch.cat, torch.concat):
            return "Concat"
        if f is torch.nn.functional.adaptive_avg_pool2d or f is torch.nn.functional.avg_pool2d:
            return "AveragePool"
        if f is torch.nn.functional.max_pool2d:
            return "MaxPool"
        if f in (torch.matmul, operator.matmul):
            return "Gemm"
    return None


_ONNX_CATEGORY = {"Conv": "Conv", "Gemm": "Gemm", "MatMul": "Gemm", "MaxPool": "MaxPool",
                  "AveragePool": "AveragePool", "GlobalAveragePool": "AveragePool", "Add": "Add",
                  "Concat": "Concat"}


def _fold_bn(model: Any) -> Any:
    from torch.fx.experimental.optimization import fuse
    gm = fuse(copy.deepcopy(model).eval())
    for m in gm.modules():
        if hasattr(m, "inplace"):
            setattr(m, "inplace", False)  # a fake-quant reads tensors an in-place op would overwrite
    return gm


def _onnx_values(model: onnx.ModelProto, tensors: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    from .report import ort_session
    sess = ort_session(m, optimize=False)
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(None, {sess.get_inputs()[0].name: x})
    return {n: v for n, v in zip(names, outs) if n in tensors}


@dataclasses.dataclass
class QatModel:
    """A fake-quantized copy of a model (``module``, trainable like any torch module) and what
    :meth:`export` needs: the ONNX activation tensor each quantizer stands for."""

    module: Any
    act_quant: dict[str, Any]     # ONNX tensor -> ActFakeQuant (shared groups share one)
    weight_quant: dict[str, Any]  # FX module name -> WeightFakeQuant
    options: QatOptions
    initial_ranges: CalibrationResult
    tensor_names: list[str]

    def ranges(self) -> dict[str, float]:
        """Current (learned) amax per ONNX activation tensor."""
        return {t: float(q.amax.detach()) for t, q in self.act_quant.items()}

    def set_enabled(self, enabled: bool) -> None:
        for q in list(self.act_quant.values()) + list(self.weight_quant.values()):
            q.enabled = enabled

    def float_module(self) -> Any:
        """The float model without quantizers (the graph :func:`prepare_qat` planned on)."""
        gm = copy.deepcopy(self.module)
        for node in list(gm.graph.nodes):
            if node.op == "call_module" and node.target.startswith("trt_edge_actq_"):
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
        for name in self.weight_quant:
            m = gm.get_submodule(name)
            m.__class__ = m.__class__.__bases__[0]  # QatConv2d -> Conv2d: same parameters
            del m.weight_quant
        gm.graph.lint()
        gm.recompile()
        gm.delete_all_unused_submodules()
        return gm.eval()

    def export(self, path: str | os.PathLike[str], sample: np.ndarray, verify_x: np.ndarray | None = None
               ) -> tuple[onnx.ModelProto, dict[str, float]]:
        """Write the Q/DQ ONNX with the learned ranges to ``path`` (via ``quantize_qdq``).

        Returns the model and a check against the fake-quant torch model on ``verify_x``
        (default ``sample``) in ONNX Runtime with optimizations off: ``top1_agreement``,
        ``max_abs_error``, ``sqnr_db``.
        """
        from ..artifacts import save_onnx
        fm = self.float_module()
        with tempfile.TemporaryDirectory(prefix="trt_edge_qat_") as tmp:
            fp32 = export_verified(fm, sample[:2], Path(tmp) / "float.onnx").model
        ranges = self.ranges()
        planned = _plan_tensors(fp32, self.options)
        if set(planned) != set(self.tensor_names):
            raise QuantizationError("The exported float graph no longer has the tensors QAT was prepared "
                                    "on; call prepare_qat again on the model.")
        result = CalibrationResult({t: TensorRange(amax=a, observed_amax=a, method="qat") for t, a in
                                    ranges.items()}, canonical_model_hash(fp32),
                                   settings={"method": "qat", "per_channel": self.options.per_channel})
        qdq = quantize_qdq(fp32, result, QuantizeOptions(per_channel=self.options.per_channel))
        dest = save_onnx(qdq, path)
        check = self.verify(dest, sample if verify_x is None else verify_x)
        log.info("QAT export %s: top-1 agreement with torch %.4f, SQNR %.1f dB", dest, check["top1_agreement"],
                 check["sqnr_db"])
        return qdq, check

    def verify(self, path: str | os.PathLike[str], x: np.ndarray) -> dict[str, float]:
        from ._train import predict
        got = ort_run(path, x, optimize=False)
        ref = predict(self.module, x)
        err = got.astype(np.float64) - ref
        sqnr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(np.sum(err ** 2), 1e-30))
        return {"top1_agreement": float(np.mean(got.argmax(1) == ref.argmax(1))),
                "max_abs_error": float(np.abs(err).max()), "sqnr_db": float(sqnr)}


def _plan_tensors(fp32: onnx.ModelProto, options: QatOptions) -> list[str]:
    m = onnx.ModelProto()
    m.CopyFrom(fp32)
    _node_names(m)
    return plan_qdq(m, QuantizeOptions(per_channel=options.per_channel)).activation_tensors()


def prepare_qat(model: Any, calib_x: np.ndarray, options: QatOptions = QatOptions()) -> QatModel:
    """A fake-quantized copy of ``model`` (single float input ``calib_x``-shaped) for training.

    Steps: fold BatchNorm (FX), export to ONNX, calibrate with our calibrator on ``calib_x``,
    plan Q/DQ with our TensorRT rules, insert a fake-quant at every planned place."""
    gm = _fold_bn(model)
    with tempfile.TemporaryDirectory(prefix="trt_edge_qat_") as tmp:
        fp32 = export_verified(gm, calib_x[:2], Path(tmp) / "float.onnx").model
    ranges = calibrate(fp32, {"input": calib_x}, options.calibration)
    named = onnx.ModelProto()
    named.CopyFrom(fp32)
    _node_names(named)
    qopt = QuantizeOptions(per_channel=options.per_channel)
    plan = plan_qdq(named, qopt)
    op_of = {n.name: n.op_type for n in named.graph.node}
    tensors = plan.activation_tensors()
    x = np.ascontiguousarray(calib_x[:options.match_samples])
    onnx_vals = _onnx_values(named, tensors, x)
    torch = _torch()
    cls = _classes()
    rec = cls.Recorder(gm)
    with torch.no_grad():
        rec.run(torch.from_numpy(x))
    modules = dict(gm.named_modules())
    group_of = {t: tuple(g) for g in plan.shared_scale for t in g}
    quantizers: dict[str, Any] = {}
    by_group: dict[tuple[str, ...], Any] = {}
    weight_modules: dict[str, Any] = {}
    for i, t in enumerate(tensors):
        if t not in ranges:
            raise QuantizationError(f"The calibrator gave no range for '{t}'.")
        want = {(_ONNX_CATEGORY.get(op_of[node], "?")) for node, _ in plan.activations.get(t, [])}
        ref = onnx_vals[t]
        tol = 1e-4 * max(float(np.abs(ref).max()), 1e-6)
        slots = []
        for node, val in rec.values.items():
            if tuple(val.shape) != ref.shape or not np.allclose(val.numpy(), ref, rtol=1e-4, atol=tol):
                continue
            for user in node.users:
                if _category(user, modules) in want:
                    slots.append((node, user))
        n_onnx = len(plan.activations.get(t, []))
        if len(slots) != n_onnx:
            raise QuantizationError(
                f"QAT placement: ONNX tensor '{t}' feeds {n_onnx} quantized slots ({sorted(want)}) but "
                f"{len(slots)} matching places were found in the traced model; this model's structure is "
                "not supported by prepare_qat (functional conv/linear calls, or duplicated values).")
        group = group_of.get(t)
        if group is not None and group in by_group:
            q = by_group[group]
        else:
            amax = max(ranges.amax(g) for g in group) if group else ranges.amax(t)
            q = cls.ActFakeQuant(amax, learn=options.learn_ranges)
            if group:
                by_group[group] = q
        qname = f"trt_edge_actq_{i}"
        gm.add_submodule(qname, q)
        for node, user in slots:
            with gm.graph.inserting_after(node):
                qn = gm.graph.call_module(qname, (node,))
            user.replace_input_with(node, qn)
            if _category(user, modules) in ("Conv", "Gemm") and user.op == "call_module":
                weight_modules[user.target] = modules[user.target]
        quantizers[t] = q
    n_weights = len(plan.weights)
    if len(weight_modules) != n_weights:
        raise QuantizationError(f"QAT placement: {n_weights} quantized weights planned, {len(weight_modules)} "
                                "weight modules found.")
    wq = {}
    for name, m in weight_modules.items():
        if type(m) not in cls.qat_class:
            raise QuantizationError(f"QAT supports Conv2d and Linear weights, not {type(m).__name__} ('{name}').")
        q = cls.WeightFakeQuant(0 if options.per_channel else None)
        m.__class__ = cls.qat_class[type(m)]
        m.weight_quant = q
        wq[name] = q
    gm.graph.lint()
    gm.recompile()
    log.info("QAT: %d activation and %d weight fake-quants, ranges from the calibrator (%s)", len(quantizers),
             len(wq), options.calibration.method)
    return QatModel(gm, quantizers, wq, options, ranges, tensors)


def ptq_qdq(model: Any, calib_x: np.ndarray, path: str | os.PathLike[str], per_channel: bool = True,
            calibration: CalibrationOptions | None = None) -> onnx.ModelProto:
    """The precision path on ``model`` (the PTQ baseline QAT is compared with): export,
    calibrate, ``quantize_qdq``; written to ``path``."""
    from ..artifacts import save_onnx
    with tempfile.TemporaryDirectory(prefix="trt_edge_ptq_") as tmp:
        fp32 = export_verified(model, calib_x[:2], Path(tmp) / "float.onnx").model
    ranges = calibrate(fp32, {"input": calib_x}, calibration or CalibrationOptions(show_progress=False))
    qdq = quantize_qdq(fp32, ranges, QuantizeOptions(per_channel=per_channel))
    save_onnx(qdq, path)
    return qdq
