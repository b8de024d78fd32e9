"""The state of one TFLite -> ONNX conversion: the ONNX graph under construction and, for each
TFLite tensor, its ONNX value(s) and layout (see ``converter.py`` for the rules)."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelImportError
from .reader import TflModel, TflOperator, TflTensor

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)
NATIVE = "native"
NCHW = "nchw"


class Emitter:
    """Holds the ONNX graph under construction and each TFLite tensor's ONNX value."""

    def __init__(self, tfl: TflModel, nchw_io: bool, symmetric_activations: bool, opset: int = 17) -> None:
        self.tfl = tfl
        self.opset = opset
        self.nchw_io = nchw_io
        self.symmetric = symmetric_activations
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.values: dict[int, dict[str, str]] = {}   # tensor index -> layout -> onnx name
        self.layout: dict[int, str] = {}              # tensor index -> layout of its primary value
        self.consts: dict[int, np.ndarray] = {}       # folded constants (float32 for float tensors)
        self.const_quant: dict[int, tuple[np.ndarray, Any]] = {}  # int8 weights kept quantized
        self._uid = 0
        self._used_names: set[str] = set()
        self.quantized_tensors = 0
        self.asymmetric: list[str] = []
        self.asymmetric_weights: list[str] = []  # kept as float with symmetric_activations
        self.transposes = 0

    # ---- names and constants ---------------------------------------------------
    def fresh(self, hint: str) -> str:
        self._uid += 1
        base = hint or "t"
        name = base if base not in self._used_names else f"{base}__{self._uid}"
        self._used_names.add(name)
        return name

    def tensor(self, idx: int) -> TflTensor:
        return self.tfl.tensors[idx]

    def add_const(self, value: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        value = np.asarray(value)
        if not value.flags.c_contiguous:  # (np.ascontiguousarray would make a 0-d scale 1-d)
            value = np.ascontiguousarray(value)
        self.inits[name] = numpy_helper.from_array(value, name)
        return name

    def i64(self, values: Any, hint: str = "const") -> str:
        return self.add_const(np.asarray(values, dtype=np.int64), hint)

    def node(self, op_type: str, inputs: list[str], hint: str, n_out: int = 1, **attrs: Any) -> list[str]:
        outs = [self.fresh(f"{hint}" if n_out == 1 else f"{hint}_{i}") for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.fresh(f"{op_type}_{hint}"),
                                           **attrs))
        return outs

    def is_const(self, idx: int) -> bool:
        return idx in self.consts or idx in self.const_quant or self.tensor(idx).is_const

    def const_value(self, idx: int) -> np.ndarray:
        """The real (dequantized, float for float tensors) value of a constant tensor."""
        if idx in self.consts:
            return self.consts[idx]
        if idx in self.const_quant:
            q, params = self.const_quant[idx]
            return _dequantize(q, params.scale, params.zero_point, params.axis)
        t = self.tensor(idx)
        if t.data is None:
            raise ModelImportError(f"Tensor '{t.name}' must be a constant here (it is computed at run time); "
                                   "this model computes a shape or weight dynamically, which the importer "
                                   "does not support.")
        data = t.data
        if t.quant is not None and data.dtype.kind in "iu" and data.dtype != np.int64 and \
                t.type_name in ("INT8", "UINT8", "INT16") and np.any(t.quant.scale != 0):
            data = _dequantize(data, t.quant.scale, t.quant.zero_point, t.quant.axis)
        elif data.dtype == np.float16:
            data = data.astype(np.float32)
        return data

    def int_const(self, idx: int) -> list[int]:
        return [int(v) for v in np.asarray(self.const_value(idx)).reshape(-1)]

    # ---- values and layouts ----------------------------------------------------
    def set_value(self, idx: int, name: str, layout: str) -> None:
        self.values[idx] = {layout: name}
        self.layout[idx] = layout

    def get(self, idx: int, want: str = NATIVE) -> str:
        """ONNX value of tensor ``idx`` in layout ``want`` ("native" = TFLite's own, or "nchw")."""
        t = self.tensor(idx)
        if idx not in self.values:
            if not self.is_const(idx):
                raise ModelImportError(f"Tensor '{t.name}' is used before any operator produces it; "
                                       "the model's operators are not in execution order.")
            return self._const_value_name(idx, want)
        have = self.values[idx]
        if want in have:
            return have[want]
        if want == NCHW and len(t.shape) != 4:
            return have[NATIVE]
        src_layout, src = next(iter(have.items()))
        perm = NHWC_TO_NCHW if want == NCHW else NCHW_TO_NHWC
        out = self.node("Transpose", [src], f"{_clean(t.name)}_{want}", perm=list(perm))[0]
        self.transposes += 1
        have[want] = out
        return out

    def _const_value_name(self, idx: int, want: str) -> str:
        t = self.tensor(idx)
        key = self.values.setdefault(idx, {})
        if want in key:
            return key[want]
        if idx in self.const_quant:
            q, params = self.const_quant[idx]
            axis = params.axis
            if want == NCHW and q.ndim == 4:
                q = q.transpose(NHWC_TO_NCHW)
                axis = NHWC_TO_NCHW.index(axis)
            name = self._dq_weight(q, params.scale, params.zero_point, axis, t.name)
        else:
            value = self.const_value(idx)
            if want == NCHW and value.ndim == 4:
                value = value.transpose(NHWC_TO_NCHW)
            name = self.add_const(value, _clean(t.name))
        key[want] = name
        return name

    def _dq_weight(self, q: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int, hint: str) -> str:
        qname = self.add_const(q, _clean(hint) + "_q")
        sname = self.add_const(np.asarray(scale, np.float32).reshape(-1) if scale.size > 1
                               else np.float32(scale.reshape(-1)[0]), _clean(hint) + "_scale")
        zname = self.add_const(np.asarray(zp, q.dtype).reshape(-1) if scale.size > 1
                               else np.asarray(zp.reshape(-1)[0], q.dtype), _clean(hint) + "_zp")
        attrs = {"axis": axis} if scale.size > 1 else {}
        return self.node("DequantizeLinear", [qname, sname, zname], _clean(hint) + "_dq", **attrs)[0]

    def weight(self, idx: int, perm: tuple[int, ...] | None) -> str:
        """A weight tensor, transposed by ``perm``; int8 weights stay int8 behind a DequantizeLinear
        (the per-channel axis follows the transpose)."""
        t = self.tensor(idx)
        if idx in self.const_quant:
            q, params = self.const_quant[idx]
        elif idx not in self.consts and t.data is not None and t.quant is not None \
                and t.type_name in ("INT8", "UINT8"):
            q, params = t.data, t.quant
        else:
            value = self.const_value(idx)
            if perm is not None:
                value = value.transpose(perm)
            return self.add_const(np.ascontiguousarray(value.astype(np.float32)), _clean(t.name))
        if self.symmetric and (q.dtype == np.uint8 or np.any(params.zero_point != 0)):
            # TensorRT's Q/DQ weights are symmetric int8: keep the exact real values in float instead
            # (re-rounding them to a symmetric grid would change the model); TensorRT then runs this
            # layer's weights in its float precision.
            self.asymmetric_weights.append(t.name)
            value = _dequantize(q, params.scale, params.zero_point, params.axis)
            if perm is not None:
                value = value.transpose(perm)
            return self.add_const(np.ascontiguousarray(value), _clean(t.name))
        if perm is not None:
            q = q.transpose(perm)
        axis = params.axis if perm is None else list(perm).index(params.axis)
        return self._dq_weight(np.ascontiguousarray(q), params.scale, params.zero_point, axis, t.name)

    def bias(self, idx: int) -> str | None:
        if idx < 0:
            return None
        t = self.tensor(idx)
        if t.data is None and idx not in self.consts:
            raise ModelImportError(f"Bias '{t.name}' is computed at run time; only constant biases are supported.")
        if t.type_name in ("INT32", "INT64") and t.quant is not None:
            value = _dequantize(t.data, t.quant.scale, t.quant.zero_point, t.quant.axis)  # type: ignore[arg-type]
        else:
            value = self.const_value(idx)
        return self.add_const(np.ascontiguousarray(value.astype(np.float32)).reshape(-1), _clean(t.name))

    # ---- outputs ----------------------------------------------------------------
    def emit(self, op: TflOperator, out_idx: int, name: str, layout: str, fused: int = 0) -> None:
        """Record ``name`` as tensor ``out_idx``: fused activation, then Q/DQ if it is quantized."""
        t = self.tensor(out_idx)
        name = self.activation(name, fused, _clean(t.name))
        name = self.fake_quant(name, out_idx)
        self.set_value(out_idx, name, layout)

    def activation(self, name: str, fused: int, hint: str) -> str:
        if fused == 0:
            return name
        if fused == 1:
            return self.node("Relu", [name], hint + "_relu")[0]
        if fused == 2:
            return self.node("Clip", [name, self.add_const(np.float32(-1), "m1"),
                                      self.add_const(np.float32(1), "p1")], hint + "_relun1")[0]
        if fused == 3:
            return self.node("Clip", [name, self.add_const(np.float32(0), "zero"),
                                      self.add_const(np.float32(6), "six")], hint + "_relu6")[0]
        if fused == 4:
            return self.node("Tanh", [name], hint + "_tanh")[0]
        raise ModelImportError(f"Fused activation {fused} (SIGN_BIT) is not supported.")

    def fake_quant(self, name: str, idx: int) -> str:
        """Wrap a float value in Q -> DQ with tensor ``idx``'s scale/zero point if it is quantized."""
        t = self.tensor(idx)
        if not t.quantized or t.type_name not in ("INT8", "UINT8", "INT16"):
            return name
        assert t.quant is not None
        if t.quant.per_channel:
            raise ModelImportError(f"Activation '{t.name}' has per-channel quantization, which only weights "
                                   "may have in TFLite; the model is not a standard TFLite integer model.")
        if t.type_name == "INT16":
            raise ModelImportError(f"Activation '{t.name}' is 16-bit quantized; ONNX Q/DQ for TensorRT "
                                   "takes 8-bit activations only. Quantize the model with int8 activations.")
        scale = float(t.quant.scale[0])
        zp = int(t.quant.zero_point[0])
        qtype: Any = {"INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16}[t.type_name]
        if self.symmetric and (zp != 0 or qtype == np.uint8):
            # Keep LiteRT's saturation at the asymmetric range's ends, then quantize symmetrically.
            info = np.iinfo(qtype)
            lo, hi = scale * (info.min - zp), scale * (info.max - zp)
            name = self.node("Clip", [name, self.add_const(np.float32(lo), "qlo"),
                                      self.add_const(np.float32(hi), "qhi")], _clean(t.name) + "_sat")[0]
            scale, zp, qtype = symmetric_params(scale, zp, qtype)
        elif zp != 0 or qtype == np.uint8:
            self.asymmetric.append(t.name)
        self.quantized_tensors += 1
        s = self.add_const(np.float32(scale), _clean(t.name) + "_scale")
        z = self.add_const(np.asarray(zp, qtype), _clean(t.name) + "_zp")
        q = self.node("QuantizeLinear", [name, s, z], _clean(t.name) + "_q")[0]
        return self.node("DequantizeLinear", [q, s, z], _clean(t.name) + "_dq")[0]


def symmetric_params(scale: float, zp: int, qtype: Any) -> tuple[float, int, Any]:
    """Re-express an asymmetric int8/uint8 range as symmetric int8 covering the same real range.

    TensorRT's INT8 Q/DQ takes zero point 0 only. The real range [s*(qmin-zp), s*(qmax-zp)]
    is kept (nothing clips that LiteRT would not), at the cost of a coarser step.
    """
    info = np.iinfo(qtype)
    lo, hi = scale * (info.min - zp), scale * (info.max - zp)
    new_scale = max(abs(lo), abs(hi)) / 127.0
    return new_scale, 0, np.int8


def _dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int) -> np.ndarray:
    q = q.astype(np.float64)
    if scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        return ((q - zp.reshape(shape)) * scale.reshape(shape)).astype(np.float32)
    return ((q - float(zp.reshape(-1)[0])) * float(scale.reshape(-1)[0])).astype(np.float32)


def _clean(name: str) -> str:
    return name.replace(";", "_").replace(":", "_")[:80] or "t"
