"""Per-layer INT8 sensitivity: how much each quantized layer alone costs, in output SQNR.

For every layer Q/DQ insertion would quantize, a model with *only that layer*
quantized is run on a few batches and its outputs compared with FP32
(:func:`trt_edge.numerics.compare_outputs`). The worst layers can then be kept in
float (:func:`keep_worst_float`), trading a little speed for accuracy.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Iterable

import numpy as np
import onnx

from .._lazy import require
from ..log import progress
from ..numerics import compare_arrays
from .batching import for_model
from .qdq import QuantizeOptions, _node_names, plan_qdq, quantize_qdq, upgrade_opset
from .ranges import CalibrationResult

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LayerSensitivity:
    node: str
    op_type: str
    sqnr_db: float       # output SQNR with only this layer in INT8 (higher is better)
    cosine: float


@dataclasses.dataclass
class SensitivityReport:
    layers: list[LayerSensitivity]
    all_int8_sqnr_db: float

    def worst(self, n: int) -> list[LayerSensitivity]:
        return sorted(self.layers, key=lambda l: l.sqnr_db)[:max(n, 0)]

    def table(self) -> str:
        lines = [f"{'layer':<48}{'op':<14}{'SQNR dB':>9}{'cosine':>10}"]
        for l in sorted(self.layers, key=lambda l: l.sqnr_db):
            lines.append(f"{l.node[:47]:<48}{l.op_type:<14}{l.sqnr_db:>9.1f}{l.cosine:>10.5f}")
        lines.append(f"{'(all layers INT8)':<62}{self.all_int8_sqnr_db:>9.1f}")
        return "\n".join(lines)


def _run(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    ort = require("onnxruntime", "sensitivity analysis")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    outs = [np.concatenate([np.asarray(o, np.float64).ravel() for o in sess.run(None, {n: f[n] for n in names})])
            for f in feeds]
    return np.concatenate(outs)


def _sqnr(actual: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    c = compare_arrays("outputs", actual, reference)
    return (c.sqnr_db if math.isfinite(c.sqnr_db) else 200.0), c.cosine


def layer_sensitivity(model: onnx.ModelProto, ranges: CalibrationResult,
                      data: Iterable[dict[str, np.ndarray]], options: QuantizeOptions | None = None,
                      max_batches: int = 4, show_progress: bool = True) -> SensitivityReport:
    """SQNR (dB) of the model outputs with each quantizable layer alone in INT8.

    Guarantees: one entry per node the placement would quantize (respecting
    ``options``' exclusions); the same batches (first ``max_batches`` of ``data``, regrouped
    into the model's batch when it is fixed) for every measurement.
    """
    opt = options or QuantizeOptions()
    model, _ = upgrade_opset(model)
    base = onnx.ModelProto()
    base.CopyFrom(model)
    _node_names(base)
    feeds = []
    for i, f in enumerate(for_model(data, base, what="sensitivity")):
        if i >= max_batches:
            break
        feeds.append(f)
    if not feeds:
        from ..errors import CalibrationError
        raise CalibrationError("Sensitivity analysis needs at least one batch of data.")
    reference = _run(base, feeds)
    plan = plan_qdq(base, opt)
    kinds = {n.name: n.op_type for n in base.graph.node}
    layers = []
    # A layer alone in INT8 can need a range the full placement does not: a residual Add whose
    # Conv input TensorRT fuses (no Q/DQ, so `--target tensorrt` calibrates none) loses that fusion
    # once the Conv is excluded. That input stays float in the trial; the trials do not warn about
    # it per layer (the full model below still warns about real gaps).
    for name in progress(plan.quantized_nodes, description="sensitivity", enabled=show_progress):
        others = tuple(n for n in plan.quantized_nodes if n != name)
        one = dataclasses.replace(opt, exclude_nodes=tuple(opt.exclude_nodes) + others, check=False,
                                  check_model_hash=False)
        q = quantize_qdq(base, ranges, one, warn_missing=False)
        sqnr, cos = _sqnr(_run(q, feeds), reference)
        layers.append(LayerSensitivity(name, kinds.get(name, "?"), sqnr, cos))
    full = quantize_qdq(base, ranges, dataclasses.replace(opt, check=False, check_model_hash=False))
    all_sqnr, _ = _sqnr(_run(full, feeds), reference)
    return SensitivityReport(layers, all_sqnr)


def keep_worst_float(options: QuantizeOptions, report: SensitivityReport, n: int) -> QuantizeOptions:
    """``options`` with the ``n`` lowest-SQNR layers added to ``exclude_nodes``."""
    worst = tuple(l.node for l in report.worst(n))
    return dataclasses.replace(options, exclude_nodes=tuple(dict.fromkeys(tuple(options.exclude_nodes) + worst)))
