"""``trt-edge build`` without TensorRT: a deployable ONNX artifact for ONNX Runtime.

Where TensorRT is missing (CI, laptops, this project's build machines) the
build still does its whole job for the embedded ONNX Runtime backend: the
requested precision is realised in the ONNX itself (FP16 conversion, or Q/DQ
from our calibration), which is also what a strongly typed TensorRT 11 build
consumes, so the artifact is the input of a later real build too.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from ..artifacts import load_onnx, model_hash, save_onnx, sha256_file, write_sidecar
from ..errors import InvalidInputError
from ..onnx_io import graph_inputs
from .options import BuildOptions
from .precision import GraphPrecision

log = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".plan", ".engine", ".trt")
FALLBACK_KIND = "onnxruntime-artifact"


@dataclasses.dataclass
class FallbackResult:
    """What the ONNX Runtime fallback wrote, and why it was used."""

    artifact_path: Path
    metadata_path: Path
    precision: str
    reason: str
    requested_path: Path


def fallback_output_path(output: str | os.PathLike[str]) -> Path:
    """``engines/NAME.plan`` -> ``engines/NAME.onnx``; an ``.onnx`` path stays as is."""
    out = Path(output)
    if out.suffix.lower() in ENGINE_SUFFIXES:
        return out.with_suffix(".onnx")
    if out.suffix.lower() != ".onnx":
        return out.with_name(out.name + ".onnx")
    return out


def build_onnx_artifact(onnx_path: str | os.PathLike[str], output: str | os.PathLike[str],
                        options: BuildOptions | None = None,
                        reason: str = "TensorRT is not installed") -> FallbackResult:
    """Write the ONNX Runtime artifact for ``options.precision`` and its sidecar.

    fp32: the model (through ``trt_edge.graph.pipeline.optimize`` when present);
    fp16: ``trt_edge.quant.convert_fp16``; int8: ``--ranges`` or ``--calib-data``
    -> ``trt_edge.quant.calibrate`` + ``quantize_qdq`` (a model that already has
    Q/DQ is kept). Guarantees: the artifact is written atomically and passes
    ``onnx.checker``; the sidecar records the reason and the sources' hashes.
    """
    options = options or BuildOptions()
    src = Path(onnx_path)
    requested = Path(output)
    dest = fallback_output_path(requested)
    if dest.resolve() == src.resolve():
        raise InvalidInputError(f"Output '{dest}' would overwrite the source model: choose another -o.")
    model = load_onnx(src)
    if options.optimize_graph:
        from .builder import optimize_if_available

        model = optimize_if_available(model)
    graph = GraphPrecision.of(model)
    sources: dict[str, str | os.PathLike[str]] = {"onnx": src}
    if options.precision == "fp16" and not graph.has_fp16:
        from ..quant import Fp16Options, convert_fp16

        model, report = convert_fp16(model, Fp16Options())
        log.info("FP16 conversion: %s", report)
    elif options.precision == "int8" and not graph.has_qdq:
        from ..quant import CalibrationOptions, CalibrationResult, QuantizeOptions, calibrate, quantize_qdq

        if options.ranges is not None:
            ranges = CalibrationResult.load(options.ranges, expected_model_hash=None)
            sources["ranges"] = options.ranges
        elif options.calib_data is not None:
            from .builder import calibration_batches

            batches = calibration_batches(options.calib_data, graph_inputs(model), options.calib_batch_size)
            ranges = calibrate(model, batches, CalibrationOptions(method=options.calib_method))
            sources["calibration_data"] = options.calib_data
        else:
            raise InvalidInputError(
                "INT8 without TensorRT needs --ranges R.json (from `trt-edge calibrate`) or "
                "--calib-data X.npz to insert Q/DQ nodes.")
        model = quantize_qdq(model, ranges, QuantizeOptions())
    import onnx

    onnx.checker.check_model(model)
    save_onnx(model, dest)
    meta = write_sidecar(dest, FALLBACK_KIND, sources=sources, options=options, extra={
        "backend": "onnxruntime", "precision": options.precision, "fallback_reason": reason,
        "requested_output": str(requested), "model_sha256": model_hash(dest),
        "source_onnx_sha256": sha256_file(src)})
    return FallbackResult(dest, meta, options.precision, reason, requested)
