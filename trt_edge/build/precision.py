"""Which builder settings give which precision on which TensorRT.

Pure decisions (tested on every machine): the builder applies the returned
plan to the real ``IBuilderConfig``.

TensorRT 11 removed weak typing (``BuilderFlag.FP16``/``INT8``, calibrators):
networks are strongly typed and the ONNX's types decide. TensorRT 10 keeps the
flags and the (deprecated) implicit INT8 calibration. Explicit Q/DQ works on
both and is our primary INT8 path.
"""
from __future__ import annotations

import dataclasses

import onnx

from ..errors import InvalidInputError
from .versions import TrtVersion

_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


@dataclasses.dataclass(frozen=True)
class GraphPrecision:
    """What the ONNX graph already carries."""

    has_qdq: bool
    has_fp16: bool

    @classmethod
    def of(cls, model: onnx.ModelProto) -> "GraphPrecision":
        has_qdq = any(n.op_type in _QDQ_OPS for n in model.graph.node)
        f16 = onnx.TensorProto.FLOAT16
        has_fp16 = (any(i.data_type == f16 for i in model.graph.initializer)
                    or any(v.type.tensor_type.elem_type == f16 for v in
                           list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info))
                    or any(n.op_type == "Cast" and any(a.name == "to" and a.i == f16 for a in n.attribute)
                           for n in model.graph.node))
        return cls(has_qdq=has_qdq, has_fp16=has_fp16)


@dataclasses.dataclass(frozen=True)
class PrecisionPlan:
    """Builder settings for one precision on one TensorRT version.

    strongly_typed: create the network with NetworkDefinitionCreationFlag.STRONGLY_TYPED
        (always on in TensorRT 11, where the flag is implicit).
    flags: BuilderFlag names to set (TensorRT 10 only).
    convert_fp16: convert the ONNX to mixed FP16 before parsing.
    quantize_qdq: insert Q/DQ (from ranges or calibration data) before parsing.
    use_calibrator: attach the legacy IInt8EntropyCalibrator2 (TensorRT 10 only).
    """

    strongly_typed: bool
    flags: tuple[str, ...] = ()
    convert_fp16: bool = False
    quantize_qdq: bool = False
    use_calibrator: bool = False
    notes: tuple[str, ...] = ()


def plan_precision(precision: str, version: TrtVersion, graph: GraphPrecision, *,
                   strongly_typed: bool | None = None, have_ranges: bool = False,
                   have_calib_data: bool = False, have_calib_cache: bool = False,
                   mixed_fp16: bool = False, prefer_calibrator: bool = False) -> PrecisionPlan:
    """Decide how to reach ``precision`` on ``version`` for a graph like ``graph``.

    Raises InvalidInputError when the request cannot be met (e.g. INT8 on
    TensorRT 11 without Q/DQ and without ranges or data to make them).
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise InvalidInputError(f"Unknown precision '{precision}'.")
    weak = version.has_weak_typing
    if not weak and strongly_typed is False:
        raise InvalidInputError(f"TensorRT {version} has no weakly typed networks: drop "
                                "--no-strongly-typed (precision comes from the ONNX types).")

    if precision == "fp32":
        if graph.has_qdq or graph.has_fp16:
            # The graph's own types decide; a weakly typed TRT 10 build would
            # otherwise fail on Q/DQ without the INT8 flag.
            if weak and not strongly_typed:
                flags = (("INT8",) if graph.has_qdq else ()) + (("FP16",) if graph.has_fp16 else ())
                return PrecisionPlan(False, flags, notes=("graph carries reduced-precision types: "
                                                          "their flags are set so they build",))
            return PrecisionPlan(True)
        return PrecisionPlan(strongly_typed if strongly_typed is not None else not weak)

    if precision == "fp16":
        if not weak or strongly_typed:
            return PrecisionPlan(True, convert_fp16=not graph.has_fp16,
                                 notes=("strongly typed: FP16 comes from converting the ONNX",))
        return PrecisionPlan(False, ("FP16",), notes=("weakly typed: BuilderFlag.FP16 lets TensorRT "
                                                      "choose FP16 kernels",))

    # int8
    extra = ("FP16",) if mixed_fp16 else ()
    legacy_ok = weak and strongly_typed is not True

    def explicit(note: str, insert: bool) -> PrecisionPlan:
        if not weak or strongly_typed:
            return PrecisionPlan(True, quantize_qdq=insert, notes=(note,))
        return PrecisionPlan(False, ("INT8",) + extra, quantize_qdq=insert,
                             notes=(note, "weakly typed network: BuilderFlag.INT8 set for the Q/DQ layers"))

    if graph.has_qdq:
        return explicit("explicit quantization: Q/DQ already in the graph", False)
    if legacy_ok and (have_calib_cache or (prefer_calibrator and have_calib_data)):
        return PrecisionPlan(False, ("INT8",) + extra, use_calibrator=True,
                             notes=("implicit INT8 with the legacy IInt8EntropyCalibrator2 "
                                    "(deprecated since TensorRT 10.1)",))
    if have_ranges or have_calib_data:
        return explicit("Q/DQ inserted from our calibration ranges (primary path)", True)
    if not weak:
        raise InvalidInputError(
            f"INT8 on TensorRT {version} needs explicit Q/DQ: give --ranges R.json (from "
            "`trt-edge calibrate`) or --calib-data X.npz so trt-edge inserts them, or quantize the "
            "model with `trt-edge quantize` first.")
    raise InvalidInputError(
        "INT8 needs calibration: give --ranges R.json (from `trt-edge calibrate`), --calib-data X.npz, "
        "or --calib-cache FILE (a TensorRT calibration cache), or a model with Q/DQ nodes.")
