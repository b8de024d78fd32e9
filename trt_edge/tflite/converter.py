"""TFLite graph -> ONNX graph, one small converter function per TFLite operator.

Layout: TFLite activations are NHWC. Inside the ONNX graph every 4-D activation
that feeds a layout-sensitive operator (Conv, pooling, Resize, DepthToSpace...) is
kept NCHW, so the converted graph has transposes only where the model's own
interface is (its NHWC inputs/outputs) and around the few operators that depend
on the element order of a flattened tensor (Reshape, Softmax over the last axis of
a 4-D tensor...). Each TFLite tensor remembers which layout its ONNX value has;
a consumer that needs the other one gets a (cached) Transpose.

Quantization: a quantized TFLite tensor (int8/uint8 with scale and zero point)
becomes a float ONNX value wrapped in QuantizeLinear -> DequantizeLinear with the
model's own scale and zero point; quantized weights become int8 initializers
behind a DequantizeLinear (per-channel axis kept); int32 biases become float
(``q * scale``). The float operators in between compute what the integer kernels
approximate, so the ONNX model agrees with LiteRT within a quantization step and
TensorRT builds it as an explicit-precision (Q/DQ) network without calibration.
"""
from __future__ import annotations

import dataclasses
import logging
import struct
from typing import Any, Callable

import numpy as np
import onnx
from onnx import helper

from ..errors import ModelImportError
from .emitter import NATIVE, NCHW, NCHW_TO_NHWC, NHWC_TO_NCHW, Emitter, _clean
from .reader import TflModel, TflOperator

log = logging.getLogger(__name__)


ConverterFn = Callable[["Emitter", TflOperator], None]
CONVERTERS: dict[str, ConverterFn] = {}


def converter(*kinds: str) -> Callable[[ConverterFn], ConverterFn]:
    """Register ``fn`` as the converter of the TFLite operator(s) ``kinds``."""
    def deco(fn: ConverterFn) -> ConverterFn:
        for k in kinds:
            CONVERTERS[k] = fn
        return fn
    return deco


def supported_operators() -> list[str]:
    return sorted(CONVERTERS)


@dataclasses.dataclass
class ConvertResult:
    model: onnx.ModelProto
    layout: str
    quantized_tensors: int
    asymmetric_tensors: list[str]
    transposes: int
    op_counts: dict[str, int]
    #: TFLite tensor index -> (ONNX value name, its layout), for per-tensor comparisons
    values: dict[int, tuple[str, str]] = dataclasses.field(default_factory=dict)



# ---- shared helpers -------------------------------------------------------------
def _same_pads(in_hw: tuple[int, int], k_hw: tuple[int, int], s_hw: tuple[int, int],
               d_hw: tuple[int, int], padding: int) -> list[int]:
    """ONNX pads [top, left, bottom, right] for TFLite padding (0 SAME, 1 VALID)."""
    if padding == 1:
        return [0, 0, 0, 0]
    begins, ends = [], []
    for size, k, s, d in zip(in_hw, k_hw, s_hw, d_hw):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        begins.append(total // 2)
        ends.append(total - total // 2)
    return begins + ends


def _need_4d(e: Emitter, idx: int, what: str) -> tuple[int, ...]:
    shape = e.tensor(idx).shape
    if len(shape) != 4:
        raise ModelImportError(f"{what} expects a 4-D NHWC input but '{e.tensor(idx).name}' has shape {shape}.")
    return shape


# ---- convolution and pooling ------------------------------------------------------
def _emit_conv(e: Emitter, op: TflOperator, o: Any, what: str, perm: tuple[int, ...],
               group_of: Callable[[int, int], int]) -> None:
    """CONV_2D and DEPTHWISE_CONV_2D: an ONNX Conv with TFLite's SAME/VALID pads, the weight
    permuted by ``perm``, the group from (input channels, weight's last dim)."""
    x, w, b = op.inputs[0], op.inputs[1], op.inputs[2] if len(op.inputs) > 2 else -1
    n, h, wd, cin = _need_4d(e, x, what)
    _, kh, kw, wlast = e.tensor(w).shape
    pads = _same_pads((h, wd), (kh, kw), (o.StrideH(), o.StrideW()), (o.DilationHFactor(), o.DilationWFactor()),
                      o.Padding())
    ins = [e.get(x, NCHW), e.weight(w, perm)]
    bias = e.bias(b)
    if bias:
        ins.append(bias)
    out = e.node("Conv", ins, _clean(e.tensor(op.outputs[0]).name), kernel_shape=[kh, kw],
                 strides=[o.StrideH(), o.StrideW()], dilations=[o.DilationHFactor(), o.DilationWFactor()],
                 pads=pads, group=group_of(cin, wlast))[0]
    e.emit(op, op.outputs[0], out, NCHW, o.FusedActivationFunction())


@converter("CONV_2D")
def _conv2d(e: Emitter, op: TflOperator) -> None:
    # TFLite [CO, KH, KW, CI] -> ONNX [CO, CI, KH, KW]; grouped when the input has more channels
    _emit_conv(e, op, op.options("Conv2DOptions"), "CONV_2D", NHWC_TO_NCHW, lambda cin, ci: cin // ci)


@converter("DEPTHWISE_CONV_2D")
def _depthwise(e: Emitter, op: TflOperator) -> None:
    # TFLite [1, KH, KW, C*M] -> ONNX [C*M, 1, KH, KW]; per-channel axis 3 -> 0; one group per channel
    _emit_conv(e, op, op.options("DepthwiseConv2DOptions"), "DEPTHWISE_CONV_2D", (3, 0, 1, 2),
               lambda cin, _: cin)


def _transpose_conv(e: Emitter, op: TflOperator, x: int, w: int, b: int, padding: int, stride_hw: tuple[int, int],
                    fused: int) -> None:
    _, h, wd, _ = _need_4d(e, x, "TRANSPOSE_CONV")
    co, kh, kw, ci = e.tensor(w).shape
    _, oh, ow, _ = e.tensor(op.outputs[0]).shape
    pads_b, pads_e = [], []
    for size, osz, k, s in ((h, oh, kh, stride_hw[0]), (wd, ow, kw, stride_hw[1])):
        total = max((size - 1) * s + k - osz, 0) if padding == 0 else 0
        pads_b.append(total // 2)
        pads_e.append(total - total // 2)
    # full output before cropping: (size-1)*s + k; output_padding covers VALID outputs larger than that
    extra = [max(osz - ((size - 1) * s + k - pb - pe), 0) for size, osz, k, s, pb, pe in
             ((h, oh, kh, stride_hw[0], pads_b[0], pads_e[0]), (wd, ow, kw, stride_hw[1], pads_b[1], pads_e[1]))]
    ins = [e.get(x, NCHW), e.weight(w, (3, 0, 1, 2))]  # OHWI -> [I, O, KH, KW]
    bias = e.bias(b)
    if bias:
        ins.append(bias)
    out = e.node("ConvTranspose", ins, _clean(e.tensor(op.outputs[0]).name), kernel_shape=[kh, kw],
                 strides=list(stride_hw), pads=pads_b + pads_e, output_padding=extra)[0]
    e.emit(op, op.outputs[0], out, NCHW, fused)


@converter("TRANSPOSE_CONV")
def _transpose_conv_builtin(e: Emitter, op: TflOperator) -> None:
    o = op.options("TransposeConvOptions")
    b = op.inputs[3] if len(op.inputs) > 3 else -1
    fused = o.FusedActivationFunction() if hasattr(o, "FusedActivationFunction") else 0
    _transpose_conv(e, op, op.inputs[2], op.inputs[1], b, o.Padding(), (o.StrideH(), o.StrideW()), fused)


@converter("CUSTOM:Convolution2DTransposeBias")
def _mediapipe_transpose_conv_bias(e: Emitter, op: TflOperator) -> None:
    """MediaPipe's custom op: a transposed convolution plus bias (inputs x, OHWI weights, bias).

    Its options are the raw C struct ``TfLiteTransposeConvParams`` (int32 padding with
    1 = SAME and 2 = VALID, stride_width, stride_height), as XNNPACK's delegate reads them.
    """
    if len(op.custom_options) < 12 or len(op.inputs) != 3:
        raise ModelImportError("Convolution2DTransposeBias: expected 3 inputs and 12 bytes of options "
                               f"(padding, stride_w, stride_h), got {len(op.inputs)} inputs and "
                               f"{len(op.custom_options)} bytes.")
    padding, stride_w, stride_h = struct.unpack("<3i", op.custom_options[:12])
    if padding not in (1, 2):
        raise ModelImportError(f"Convolution2DTransposeBias: unknown padding {padding}.")
    _transpose_conv(e, op, op.inputs[0], op.inputs[1], op.inputs[2], 0 if padding == 1 else 1,
                    (stride_h, stride_w), 0)


@converter("MAX_POOL_2D", "AVERAGE_POOL_2D")
def _pool(e: Emitter, op: TflOperator) -> None:
    o = op.options("Pool2DOptions")
    x = op.inputs[0]
    _, h, w, _ = _need_4d(e, x, op.opcode)
    k = (o.FilterHeight(), o.FilterWidth())
    s = (o.StrideH(), o.StrideW())
    pads = _same_pads((h, w), k, s, (1, 1), o.Padding())
    kind = "MaxPool" if op.opcode == "MAX_POOL_2D" else "AveragePool"
    attrs: dict[str, Any] = dict(kernel_shape=list(k), strides=list(s), pads=pads)
    if kind == "AveragePool":
        attrs["count_include_pad"] = 0  # TFLite averages over the valid elements only
    out = e.node(kind, [e.get(x, NCHW)], _clean(e.tensor(op.outputs[0]).name), **attrs)[0]
    e.emit(op, op.outputs[0], out, NCHW, o.FusedActivationFunction())


@converter("FULLY_CONNECTED")
def _fully_connected(e: Emitter, op: TflOperator) -> None:
    o = op.options("FullyConnectedOptions")
    if o.WeightsFormat() != 0:
        raise ModelImportError("FULLY_CONNECTED with shuffled int8 weights is not supported.")
    x, w = op.inputs[0], op.inputs[1]
    b = op.inputs[2] if len(op.inputs) > 2 else -1
    units, depth = e.tensor(w).shape
    src = e.get(x, NATIVE)
    if len(e.tensor(x).shape) != 2:
        src = e.node("Reshape", [src, e.i64([-1, depth], "fc_shape")], _clean(e.tensor(x).name) + "_2d")[0]
    ins = [src, e.weight(w, None)]
    bias = e.bias(b)
    if bias:
        ins.append(bias)
    out = e.node("Gemm", ins, _clean(e.tensor(op.outputs[0]).name), transB=1)[0]
    out_shape = e.tensor(op.outputs[0]).shape
    if len(out_shape) != 2:
        out = e.node("Reshape", [out, e.i64(list(out_shape), "fc_out_shape")],
                     _clean(e.tensor(op.outputs[0]).name) + "_nd")[0]
    e.emit(op, op.outputs[0], out, NATIVE, o.FusedActivationFunction())


# ---- element-wise -----------------------------------------------------------------
def _binary_operands(e: Emitter, a: int, b: int) -> tuple[str, str, str]:
    """Both operands in one layout that broadcasts like TFLite's NHWC does."""
    la = e.layout.get(a) if not e.is_const(a) else None
    lb = e.layout.get(b) if not e.is_const(b) else None
    nchw = NCHW in (la, lb)
    if nchw:
        for idx, lay in ((a, la), (b, lb)):
            rank = len(e.tensor(idx).shape)
            if lay is not None and rank != 4 and rank > 1:
                nchw = False  # a lower-rank activation broadcasts against NHWC order only
    if not nchw:
        return e.get(a, NATIVE), e.get(b, NATIVE), NATIVE
    names = []
    for idx in (a, b):
        if e.is_const(idx):
            v = e.const_value(idx)
            if v.size == 1:
                names.append(e.add_const(v.reshape(()).astype(v.dtype), _clean(e.tensor(idx).name)))
            else:
                v4 = v.reshape((1,) * (4 - v.ndim) + v.shape).transpose(NHWC_TO_NCHW)
                names.append(e.add_const(np.ascontiguousarray(v4), _clean(e.tensor(idx).name)))
        else:
            names.append(e.get(idx, NCHW))
    return names[0], names[1], NCHW


_BINARY = {"ADD": "Add", "SUB": "Sub", "MUL": "Mul", "DIV": "Div", "MAXIMUM": "Max", "MINIMUM": "Min",
           "POW": "Pow", "SQUARED_DIFFERENCE": "SquaredDifference"}
_BINARY_OPTIONS = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions", "DIV": "DivOptions"}


@converter(*_BINARY)
def _binary(e: Emitter, op: TflOperator) -> None:
    a, b, layout = _binary_operands(e, op.inputs[0], op.inputs[1])
    hint = _clean(e.tensor(op.outputs[0]).name)
    if op.opcode == "SQUARED_DIFFERENCE":
        d = e.node("Sub", [a, b], hint + "_diff")[0]
        out = e.node("Mul", [d, d], hint)[0]
    else:
        out = e.node(_BINARY[op.opcode], [a, b], hint)[0]
    fused = 0
    if op.opcode in _BINARY_OPTIONS:
        fused = op.options(_BINARY_OPTIONS[op.opcode]).FusedActivationFunction()
    e.emit(op, op.outputs[0], out, layout, fused)


_UNARY = {"RELU": "Relu", "LOGISTIC": "Sigmoid", "TANH": "Tanh", "EXP": "Exp", "ABS": "Abs", "NEG": "Neg",
          "SQRT": "Sqrt", "LOG": "Log", "FLOOR": "Floor", "CEIL": "Ceil", "HARD_SWISH": "HardSwish",
          "ELU": "Elu", "SIN": "Sin", "COS": "Cos"}


@converter(*_UNARY, "RELU6", "RELU_N1_TO_1", "RSQRT", "SQUARE", "LEAKY_RELU", "RELU_0_TO_1")
def _unary(e: Emitter, op: TflOperator) -> None:
    x = op.inputs[0]
    layout = e.layout.get(x, NATIVE) if not e.is_const(x) else NATIVE
    src = e.get(x, layout)
    hint = _clean(e.tensor(op.outputs[0]).name)
    if op.opcode in _UNARY:
        out = e.node(_UNARY[op.opcode], [src], hint)[0]
    elif op.opcode in ("RELU6", "RELU_N1_TO_1", "RELU_0_TO_1"):
        lo, hi = {"RELU6": (0, 6), "RELU_N1_TO_1": (-1, 1), "RELU_0_TO_1": (0, 1)}[op.opcode]
        out = e.node("Clip", [src, e.add_const(np.float32(lo), "lo"), e.add_const(np.float32(hi), "hi")], hint)[0]
    elif op.opcode == "RSQRT":
        out = e.node("Reciprocal", [e.node("Sqrt", [src], hint + "_sqrt")[0]], hint)[0]
    elif op.opcode == "SQUARE":
        out = e.node("Mul", [src, src], hint)[0]
    else:  # LEAKY_RELU
        out = e.node("LeakyRelu", [src], hint, alpha=float(op.options("LeakyReluOptions").Alpha()))[0]
    e.emit(op, op.outputs[0], out, layout)


@converter("PRELU")
def _prelu(e: Emitter, op: TflOperator) -> None:
    x, alpha, layout = _binary_operands(e, op.inputs[0], op.inputs[1])
    out = e.node("PRelu", [x, alpha], _clean(e.tensor(op.outputs[0]).name))[0]
    e.emit(op, op.outputs[0], out, layout)


# ---- data movement ----------------------------------------------------------------
@converter("PAD", "PADV2", "MIRROR_PAD")
def _pad(e: Emitter, op: TflOperator) -> None:
    x = op.inputs[0]
    rank = len(e.tensor(x).shape)
    pads = np.asarray(e.const_value(op.inputs[1]), np.int64).reshape(rank, 2)
    layout = e.layout.get(x, NATIVE) if rank == 4 and not e.is_const(x) else NATIVE
    if layout == NCHW:
        pads = pads[list(NHWC_TO_NCHW)]
    ins = [e.get(x, layout), e.i64(np.concatenate([pads[:, 0], pads[:, 1]]), "pads")]
    attrs: dict[str, Any] = {}
    if op.opcode == "PADV2" and len(op.inputs) > 2:
        ins.append(e.add_const(np.asarray(e.const_value(op.inputs[2]), np.float32).reshape(()), "pad_value"))
    if op.opcode == "MIRROR_PAD":
        mode = op.options("MirrorPadOptions").Mode()
        if mode != 0:
            raise ModelImportError("MIRROR_PAD in SYMMETRIC mode has no ONNX equivalent (ONNX reflect excludes "
                                   "the edge); only REFLECT is supported.")
        attrs["mode"] = "reflect"
    # (an integer PAD fills with the zero point, i.e. real 0: the float graph pads with 0 too)
    out = e.node("Pad", ins, _clean(e.tensor(op.outputs[0]).name), **attrs)[0]
    e.emit(op, op.outputs[0], out, layout)


@converter("RESHAPE", "SQUEEZE", "EXPAND_DIMS")
def _reshape(e: Emitter, op: TflOperator) -> None:
    out_shape = e.tensor(op.outputs[0]).shape
    src = e.get(op.inputs[0], NATIVE)
    out = e.node("Reshape", [src, e.i64(list(out_shape), "shape")], _clean(e.tensor(op.outputs[0]).name))[0]
    e.emit(op, op.outputs[0], out, NATIVE)


@converter("CONCATENATION")
def _concat(e: Emitter, op: TflOperator) -> None:
    o = op.options("ConcatenationOptions")
    rank = len(e.tensor(op.outputs[0]).shape)
    axis = o.Axis() % rank
    acts = [i for i in op.inputs if not e.is_const(i)]
    layout = NCHW if rank == 4 and acts and all(e.layout.get(i) == NCHW for i in acts) else NATIVE
    onnx_axis = NHWC_TO_NCHW.index(axis) if layout == NCHW else axis
    out = e.node("Concat", [e.get(i, layout) for i in op.inputs], _clean(e.tensor(op.outputs[0]).name),
                 axis=onnx_axis)[0]
    e.emit(op, op.outputs[0], out, layout, o.FusedActivationFunction())


@converter("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR")
def _resize(e: Emitter, op: TflOperator) -> None:
    x = op.inputs[0]
    n, h, w, c = _need_4d(e, x, op.opcode)
    oh, ow = e.int_const(op.inputs[1])
    bilinear = op.opcode == "RESIZE_BILINEAR"
    o = op.options("ResizeBilinearOptions" if bilinear else "ResizeNearestNeighborOptions")
    align, half = bool(o.AlignCorners()), bool(o.HalfPixelCenters())
    attrs: dict[str, Any] = {"mode": "linear" if bilinear else "nearest"}
    if align:
        attrs["coordinate_transformation_mode"] = "align_corners"
        if not bilinear:
            attrs["nearest_mode"] = "round_prefer_ceil"
    elif half:
        attrs["coordinate_transformation_mode"] = "half_pixel"
        if not bilinear:
            attrs["nearest_mode"] = "round_prefer_ceil"  # round(v - 0.5) == floor(v): TFLite's rule
    else:
        attrs["coordinate_transformation_mode"] = "asymmetric"
        if not bilinear:
            attrs["nearest_mode"] = "floor"
    sizes = e.i64([n, c, oh, ow], "sizes")
    out = e.node("Resize", [e.get(x, NCHW), "", "", sizes], _clean(e.tensor(op.outputs[0]).name), **attrs)[0]
    e.emit(op, op.outputs[0], out, NCHW)


@converter("DEPTH_TO_SPACE", "SPACE_TO_DEPTH")
def _depth_space(e: Emitter, op: TflOperator) -> None:
    x = op.inputs[0]
    _need_4d(e, x, op.opcode)
    d2s = op.opcode == "DEPTH_TO_SPACE"
    block = op.options("DepthToSpaceOptions" if d2s else "SpaceToDepthOptions").BlockSize()
    attrs: dict[str, Any] = {"blocksize": block}
    if d2s:
        attrs["mode"] = "DCR"  # TF's channel order: (block_row, block_col, channel)
    out = e.node("DepthToSpace" if d2s else "SpaceToDepth", [e.get(x, NCHW)],
                 _clean(e.tensor(op.outputs[0]).name), **attrs)[0]
    e.emit(op, op.outputs[0], out, NCHW)


@converter("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD")
def _reduce(e: Emitter, op: TflOperator) -> None:
    x = op.inputs[0]
    rank = len(e.tensor(x).shape)
    axes = sorted({a % rank for a in e.int_const(op.inputs[1])})
    keep = bool(op.options("ReducerOptions").KeepDims())
    layout = e.layout.get(x, NATIVE) if not e.is_const(x) else NATIVE
    if layout == NCHW and not keep:
        rest_native = [d for d in range(4) if d not in axes]
        rest_nchw = [NHWC_TO_NCHW[i] for i in range(4) if NHWC_TO_NCHW[i] not in axes]
        if rest_native != rest_nchw:
            layout = NATIVE
    onnx_axes = sorted(NHWC_TO_NCHW.index(a) for a in axes) if layout == NCHW else axes
    kind = {"MEAN": "ReduceMean", "SUM": "ReduceSum", "REDUCE_MAX": "ReduceMax", "REDUCE_MIN": "ReduceMin",
            "REDUCE_PROD": "ReduceProd"}[op.opcode]
    hint = _clean(e.tensor(op.outputs[0]).name)
    if kind == "ReduceSum" or e.opset >= 18:  # axes became an input in opset 13 (Sum) / 18 (the rest)
        out = e.node(kind, [e.get(x, layout), e.i64(onnx_axes, "axes")], hint, keepdims=int(keep))[0]
    else:
        out = e.node(kind, [e.get(x, layout)], hint, axes=onnx_axes, keepdims=int(keep))[0]
    out_layout = layout if (keep and layout == NCHW) else NATIVE
    e.emit(op, op.outputs[0], out, out_layout)


@converter("SOFTMAX", "LOG_SOFTMAX")
def _softmax(e: Emitter, op: TflOperator) -> None:
    src = e.get(op.inputs[0], NATIVE)
    hint = _clean(e.tensor(op.outputs[0]).name)
    if op.opcode == "SOFTMAX":
        beta = float(op.options("SoftmaxOptions").Beta())
        if beta != 1.0:
            src = e.node("Mul", [src, e.add_const(np.float32(beta), "beta")], hint + "_beta")[0]
        out = e.node("Softmax", [src], hint, axis=-1)[0]
    else:
        out = e.node("LogSoftmax", [src], hint, axis=-1)[0]
    e.emit(op, op.outputs[0], out, NATIVE)


@converter("TRANSPOSE")
def _transpose(e: Emitter, op: TflOperator) -> None:
    x = op.inputs[0]
    perm = e.int_const(op.inputs[1])
    if e.layout.get(x) == NCHW and NATIVE not in e.values.get(x, {}):
        # native = nchw.transpose(NCHW_TO_NHWC); out = native.transpose(perm)
        src, perm = e.get(x, NCHW), [NCHW_TO_NHWC[p] for p in perm]
    else:
        src = e.get(x, NATIVE)
    out = e.node("Transpose", [src], _clean(e.tensor(op.outputs[0]).name), perm=perm)[0]
    e.emit(op, op.outputs[0], out, NATIVE)


@converter("STRIDED_SLICE")
def _strided_slice(e: Emitter, op: TflOperator) -> None:
    o = op.options("StridedSliceOptions")
    if o.EllipsisMask() or o.NewAxisMask():
        raise ModelImportError("STRIDED_SLICE with an ellipsis or new-axis mask is not supported.")
    if hasattr(o, "Offset") and o.Offset():
        raise ModelImportError("STRIDED_SLICE with offset=true is not supported.")
    x = op.inputs[0]
    shape = e.tensor(x).shape
    begin, end, strides = (e.int_const(i) for i in op.inputs[1:4])
    starts, ends = [], []
    big = 2 ** 62
    for i, (b, en, s) in enumerate(zip(begin, end, strides)):
        if o.ShrinkAxisMask() >> i & 1:
            starts.append(b)
            ends.append(b + 1 if b != -1 else big)
            continue
        starts.append(b if not (o.BeginMask() >> i & 1) else (0 if s > 0 else big))
        ends.append(en if not (o.EndMask() >> i & 1) else (big if s > 0 else -big))
    axes = list(range(len(begin)))
    src = e.get(x, NATIVE)
    hint = _clean(e.tensor(op.outputs[0]).name)
    out = e.node("Slice", [src, e.i64(starts), e.i64(ends), e.i64(axes), e.i64(strides)], hint + "_slice")[0]
    out_shape = e.tensor(op.outputs[0]).shape
    if o.ShrinkAxisMask() or len(out_shape) != len(shape):
        out = e.node("Reshape", [out, e.i64(list(out_shape), "shape")], hint)[0]
    e.emit(op, op.outputs[0], out, NATIVE)


@converter("SLICE")
def _slice(e: Emitter, op: TflOperator) -> None:
    begin, size = e.int_const(op.inputs[1]), e.int_const(op.inputs[2])
    shape = e.tensor(op.inputs[0]).shape
    ends = [shape[i] if s == -1 else b + s for i, (b, s) in enumerate(zip(begin, size))]
    out = e.node("Slice", [e.get(op.inputs[0], NATIVE), e.i64(begin), e.i64(ends), e.i64(list(range(len(begin))))],
                 _clean(e.tensor(op.outputs[0]).name))[0]
    e.emit(op, op.outputs[0], out, NATIVE)


@converter("SPLIT", "SPLIT_V")
def _split(e: Emitter, op: TflOperator) -> None:
    if op.opcode == "SPLIT":
        axis_idx, x = op.inputs[0], op.inputs[1]
        sizes = None
    else:
        x, axis_idx = op.inputs[0], op.inputs[2]
        sizes = e.int_const(op.inputs[1])
    rank = len(e.tensor(x).shape)
    axis = e.int_const(axis_idx)[0] % rank
    out_sizes = [e.tensor(i).shape[axis] for i in op.outputs]
    if sizes is not None and -1 in sizes:
        sizes = out_sizes
    outs = e.node("Split", [e.get(x, NATIVE), e.i64(out_sizes, "split")], _clean(e.tensor(op.outputs[0]).name),
                  n_out=len(op.outputs), axis=axis)
    for idx, name in zip(op.outputs, outs):
        e.emit(op, idx, name, NATIVE)


@converter("PACK")
def _pack(e: Emitter, op: TflOperator) -> None:
    axis = op.options("PackOptions").Axis() % len(e.tensor(op.outputs[0]).shape)
    parts = [e.node("Unsqueeze", [e.get(i, NATIVE), e.i64([axis], "axes")], "pack_part")[0] for i in op.inputs]
    out = e.node("Concat", parts, _clean(e.tensor(op.outputs[0]).name), axis=axis)[0]
    e.emit(op, op.outputs[0], out, NATIVE)


@converter("CAST")
def _cast(e: Emitter, op: TflOperator) -> None:
    to = helper.np_dtype_to_tensor_dtype(e.tensor(op.outputs[0]).dtype)
    out = e.node("Cast", [e.get(op.inputs[0], NATIVE)], _clean(e.tensor(op.outputs[0]).name), to=to)[0]
    e.emit(op, op.outputs[0], out, NATIVE)


@converter("ARG_MAX", "ARG_MIN")
def _argmax(e: Emitter, op: TflOperator) -> None:
    x = op.inputs[0]
    axis = e.int_const(op.inputs[1])[0] % len(e.tensor(x).shape)
    out = e.node("ArgMax" if op.opcode == "ARG_MAX" else "ArgMin", [e.get(x, NATIVE)], "argmax", axis=axis,
                 keepdims=0)[0]
    dtype = e.tensor(op.outputs[0]).dtype
    if dtype != np.int64:
        out = e.node("Cast", [out], _clean(e.tensor(op.outputs[0]).name), to=helper.np_dtype_to_tensor_dtype(dtype))[0]
    e.emit(op, op.outputs[0], out, NATIVE)


# ---- quantization and weight plumbing ----------------------------------------------
@converter("DEQUANTIZE")
def _dequantize_op(e: Emitter, op: TflOperator) -> None:
    x, y = op.inputs[0], op.outputs[0]
    t = e.tensor(x)
    if t.is_const or x in e.consts:
        if t.type_name in ("INT8", "UINT8") and t.quant is not None and x not in e.consts:
            assert t.data is not None
            e.const_quant[y] = (t.data, t.quant)  # keep int8 weights quantized (Q/DQ weight)
        else:
            e.consts[y] = e.const_value(x)       # float16 weights -> float32: exact
        return
    # int8 activation -> float: the float graph already carries the dequantized value.
    layout = e.layout.get(x, NATIVE)
    e.set_value(y, e.get(x, layout), layout)


@converter("QUANTIZE")
def _quantize_op(e: Emitter, op: TflOperator) -> None:
    x = op.inputs[0]
    layout = e.layout.get(x, NATIVE) if not e.is_const(x) else NATIVE
    e.emit(op, op.outputs[0], e.get(x, layout), layout)


@converter("DENSIFY")
def _densify(e: Emitter, op: TflOperator) -> None:
    t = e.tensor(op.inputs[0])
    if t.data is None:
        raise ModelImportError(f"DENSIFY of '{t.name}', which is not a constant, is not supported.")
    e.consts[op.outputs[0]] = e.const_value(op.inputs[0])  # densified by the reader


# ---- the driver --------------------------------------------------------------------
_KNOWN_UNRUNNABLE = {
    "Landmarks2TransformMatrix", "TransformTensorBilinear", "TransformLandmarks",
}


def _value_info(e: Emitter, idx: int, name: str, layout: str) -> onnx.ValueInfoProto:
    t = e.tensor(idx)
    dtype = np.float32 if t.quantized and t.type_name in ("INT16",) else t.dtype
    if dtype == np.float16:
        dtype = np.float32
    shape = list(t.shape)  # TFLite runs with static shapes; so does the converted graph
    if layout == NCHW and len(shape) == 4:
        shape = [shape[i] for i in NHWC_TO_NCHW]
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape)


def convert(tfl: TflModel, *, nchw_io: bool = False, symmetric_activations: bool = False,
            opset: int = 17, graph_name: str | None = None) -> ConvertResult:
    """Convert a parsed TFLite model to an ONNX ModelProto (checked with onnx.checker)."""
    if tfl.n_subgraphs > 1:
        log.warning("The model has %d subgraphs; only the main one is converted (control flow such as "
                    "WHILE/IF is not supported).", tfl.n_subgraphs)
    problems = []
    for op in tfl.operators:
        if op.kind not in CONVERTERS:
            if op.opcode == "CUSTOM":
                extra = (" It is a MediaPipe custom op that LiteRT itself cannot run without MediaPipe's "
                         "op registrations." if op.custom_code in _KNOWN_UNRUNNABLE else "")
                problems.append(f"custom op '{op.custom_code}' (operator #{op.index}).{extra}")
            else:
                problems.append(f"{op.opcode} (operator #{op.index})")
    if problems:
        uniq = sorted(set(p.split(" (operator")[0] for p in problems))
        raise ModelImportError(
            "The TFLite model uses operators the importer cannot convert: " + "; ".join(uniq)
            + f". Supported: {', '.join(supported_operators())}. Nothing was written; the model cannot be "
              "converted correctly without them (a custom op needs a TensorRT plugin and an ONNX custom "
              "domain of its own).")
    e = Emitter(tfl, nchw_io, symmetric_activations, opset)
    graph_inputs = []
    for idx in tfl.inputs:
        t = e.tensor(idx)
        layout = NCHW if nchw_io and len(t.shape) == 4 else NATIVE
        name = t.name
        e._used_names.add(name)
        if t.quantized and t.type_name in ("INT8", "UINT8"):
            graph_inputs.append(_value_info(e, idx, name, layout))
            assert t.quant is not None
            scale = e.add_const(np.float32(t.quant.scale[0]), _clean(name) + "_scale")
            zp = e.add_const(np.asarray(int(t.quant.zero_point[0]), t.dtype), _clean(name) + "_zp")
            deq = e.node("DequantizeLinear", [name, scale, zp], _clean(name) + "_dq")[0]
            e.set_value(idx, deq, layout)
        else:
            graph_inputs.append(_value_info(e, idx, name, layout))
            e.set_value(idx, name, layout)
    for t in tfl.tensors:  # reserve output names so internal values never take them
        if t.index in tfl.outputs:
            e._used_names.add(t.name)
    for op in tfl.operators:
        try:
            CONVERTERS[op.kind](e, op)
        except ModelImportError as exc:
            raise ModelImportError(f"Operator #{op.index} {op.kind}: {exc}") from exc
    graph_outputs = []
    for idx in tfl.outputs:
        t = e.tensor(idx)
        if idx not in e.values:
            raise ModelImportError(f"Output '{t.name}' is never computed by the model's operators.")
        layout = NCHW if nchw_io and len(t.shape) == 4 else NATIVE
        src = e.get(idx, layout)
        if t.quantized and t.type_name in ("INT8", "UINT8"):
            assert t.quant is not None
            scale = e.add_const(np.float32(t.quant.scale[0]), _clean(t.name) + "_oscale")
            zp = e.add_const(np.asarray(int(t.quant.zero_point[0]), t.dtype), _clean(t.name) + "_ozp")
            e.nodes.append(helper.make_node("QuantizeLinear", [src, scale, zp], [t.name], name=f"QuantizeLinear_out_{idx}"))
        else:
            e.nodes.append(helper.make_node("Identity", [src], [t.name], name=f"Identity_out_{idx}"))
        graph_outputs.append(_value_info(e, idx, t.name, layout))
    graph = helper.make_graph(e.nodes, graph_name or "tflite_import", graph_inputs, graph_outputs,
                              initializer=list(e.inits.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="trt_edge.tflite")
    model.ir_version = min(model.ir_version, 9)  # readable by the ONNX Runtime / TensorRT parsers in use
    if tfl.description:
        helper.set_model_props(model, {"tflite_description": tfl.description[:200]})
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # noqa: BLE001 - checker raises ValidationError / InferenceError
        raise ModelImportError(f"The converted ONNX model does not pass onnx.checker: {exc}. This is a bug "
                               "in the importer; please report it with the .tflite file.") from exc
    counts: dict[str, int] = {}
    for n in model.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    if e.asymmetric_weights:
        log.warning("%d quantized weights have non-zero zero points (e.g. uint8 weights); TensorRT's Q/DQ "
                    "takes symmetric int8 weights only, so they are kept as exact float weights.",
                    len(e.asymmetric_weights))
    values = {idx: (names[e.layout[idx]], e.layout[idx]) for idx, names in e.values.items()
              if idx in e.layout and e.layout[idx] in names}
    return ConvertResult(model, NCHW if nchw_io else "nhwc", e.quantized_tensors, e.asymmetric, e.transposes,
                         counts, values)


__all__ = ["convert", "ConvertResult", "CONVERTERS", "converter", "supported_operators"]
