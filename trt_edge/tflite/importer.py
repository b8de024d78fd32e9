"""``import_tflite``: .tflite -> verified ONNX file with a sidecar."""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import numpy as np
import onnx

from ..artifacts import save_onnx, sha256_file, write_sidecar
from ..errors import InvalidInputError, VerificationError
from .converter import convert
from .options import ImportOptions
from .reader import read_model
from .verify import (OperatorCheck, Verification, is_quantized, litert_interpreter, operator_agreement,
                     sample_inputs, verify_against_litert)

log = logging.getLogger(__name__)

CONVERTER_NAME = "trt_edge.tflite"


@dataclasses.dataclass
class ImportResult:
    path: Path | None
    model: onnx.ModelProto
    input_names: list[str]
    output_names: list[str]
    layout: str                  # "nhwc" (TFLite's interface) or "nchw"
    tflite_ops: dict[str, int]
    onnx_ops: dict[str, int]
    quantized_tensors: int       # activations carried as Q/DQ with the model's scales
    asymmetric_tensors: list[str]
    seconds: float
    verification: list[Verification]
    operator_checks: list[OperatorCheck] = dataclasses.field(default_factory=list)  # quantized models

    @property
    def verified(self) -> bool:
        return bool(self.verification) and all(v.passed for v in self.verification)


def import_tflite(source: str | os.PathLike[str], output: str | os.PathLike[str] | None = None,
                  options: ImportOptions | None = None,
                  feeds: list[dict[str, np.ndarray]] | None = None) -> ImportResult:
    """Convert ``source`` (.tflite) to ONNX, verify it against LiteRT, write ``output`` + sidecar.

    With ``output=None`` nothing is written (the model is returned). On a verification
    mismatch a :class:`VerificationError` with the comparison table is raised and no
    file is left behind.
    """
    opts = options or ImportOptions()
    src = Path(source)
    if src.suffix.lower() != ".tflite" and src.exists():
        log.info("'%s' has no .tflite suffix; reading it as a TFLite flatbuffer anyway", src)
    start = time.perf_counter()
    tfl = read_model(src)
    res = convert(tfl, nchw_io=opts.nchw, symmetric_activations=opts.symmetric_activations, opset=opts.opset,
                  graph_name=src.stem)
    seconds = time.perf_counter() - start
    if res.asymmetric_tensors:
        log.warning("%d quantized activations have a non-zero zero point (asymmetric int8/uint8); ONNX Runtime "
                    "runs them as they are, but TensorRT's Q/DQ takes zero point 0 only: re-import with "
                    "--symmetric-activations to build this model with TensorRT.", len(res.asymmetric_tensors))
    verification: list[Verification] = []
    operator_checks: list[OperatorCheck] = []
    if opts.verify:
        if feeds is not None and not feeds:
            raise InvalidInputError("feeds is empty: give at least one input dict, or None for random inputs.")
        verification = verify_against_litert(src, res.model, tfl, opts.nchw, feeds, opts.symmetric_activations)
        if is_quantized(tfl):
            first = feeds[0] if feeds else sample_inputs(litert_interpreter(src), 0)
            operator_checks = operator_agreement(src, tfl, res, first, opts.symmetric_activations)
            bad = [c for c in operator_checks if not c.passed]
            if bad:
                lines = "\n".join(f"  #{c.index} {c.kind} -> {c.output}: {c.steps:.2f} steps, "
                                  f"{c.elements_over_one_step} elements over one step" for c in bad[:10])
                raise VerificationError(f"{len(bad)} converted operators disagree with LiteRT's integer kernels "
                                        f"by more than one quantization step (run in isolation):\n{lines}\n"
                                        "Nothing was written; please report it with the .tflite file.")
            log.info("every quantized operator agrees with LiteRT within one step (worst %.2f steps)",
                     max((c.steps for c in operator_checks if c.step), default=0.0))
        for v in verification:
            if not v.passed:
                raise VerificationError(
                    f"The imported ONNX disagrees with LiteRT for inputs {v.shapes}:\n{v.report.table()}\n"
                    "Nothing was written. This is an importer bug for one of the model's operators; please "
                    "report it with the .tflite file.", v.report)
        log.info("verified against LiteRT: worst max abs err %.2e",
                 max(v.report.worst().max_abs_error for v in verification))
    dest = None
    if output is not None:
        dest = save_onnx(res.model, output)
        write_sidecar(dest, "tflite-import", sources={"tflite": src}, options=opts, extra={
            "converter": CONVERTER_NAME, "layout": res.layout,
            "tflite_ops": tfl.op_counts(), "onnx_ops": res.op_counts,
            "quantized_tensors": res.quantized_tensors, "asymmetric_tensors": len(res.asymmetric_tensors),
            "tflite_sha256": sha256_file(src), "import_seconds": seconds,
            "verification": [{"shapes": v.shapes, "passed": v.passed,
                              "tolerances": {k: dataclasses.asdict(t) for k, t in v.tolerances.items()},
                              "outputs": [dataclasses.asdict(o) for o in v.report.outputs]}
                             for v in verification],
            "operator_checks": {"count": len(operator_checks),
                                "worst_steps": max((c.steps for c in operator_checks if c.step), default=None)}})
        log.info("imported %s -> %s (%d TFLite ops, %.1fs)", src.name, dest, len(tfl.operators), seconds)
    return ImportResult(dest, res.model, [i.name for i in res.model.graph.input],
                        [o.name for o in res.model.graph.output], res.layout, tfl.op_counts(), res.op_counts,
                        res.quantized_tensors, res.asymmetric_tensors, seconds, verification, operator_checks)
