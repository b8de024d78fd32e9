"""Recipes: compose compression steps, with a report after each one.

A recipe is a list of :class:`Step` (``"distill:2,prune:0.5,finetune:2,qat:1"`` on the command
line). Each step transforms the current model; after each, :func:`trt_edge.compress.report.measure`
exports it (verified against torch in ONNX Runtime) and records parameters, MACs, size, the
task metric and the ONNX Runtime latency. ``qat`` must be the last step: its result is the Q/DQ
ONNX file (what the engine builder takes), measured in ONNX Runtime.

Step kinds and what the number after ``:`` means:

==============  ====================================================================
``prune``       structured (channel) pruning, fraction of MACs removed (0.5)
``unstructured`` gradual global magnitude pruning to this sparsity (0.8), 2 steps
``sparse24``    2:4 pruning of Conv/Linear weights then masked fine-tuning (epochs)
``distill``     distillation from the recipe's original model (epochs)
``finetune``    cross-entropy (or teacher-label) fine-tuning (epochs)
``lowrank``     SVD factorisation keeping this energy (0.9)
``share``       k-means weight sharing with this many bits (4) + codebook fine-tuning
``qat``         quantization-aware training (epochs), exported as Q/DQ INT8 ONNX
==============  ====================================================================
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .._lazy import require
from ..errors import InvalidInputError
from ..log import stage
from ._train import TrainOptions, cross_entropy, train
from .report import StepReport, format_reports, measure, ort_latency_ms

log = logging.getLogger(__name__)
DEFAULTS = {"prune": 0.5, "unstructured": 0.8, "sparse24": 1, "distill": 2, "finetune": 1, "lowrank": 0.9,
            "share": 4, "qat": 1}


@dataclasses.dataclass(frozen=True)
class Step:
    kind: str
    amount: float

    @classmethod
    def parse(cls, text: str) -> "Step":
        kind, _, num = text.strip().partition(":")
        if kind not in DEFAULTS:
            raise InvalidInputError(f"Unknown recipe step '{kind}'; use one of {', '.join(DEFAULTS)} "
                                    "(e.g. 'prune:0.5,finetune:2,qat:1').")
        try:
            amount = float(num) if num else float(DEFAULTS[kind])
        except ValueError:
            raise InvalidInputError(f"Step '{text}': '{num}' is not a number.") from None
        return cls(kind, amount)

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.amount:g}"


def parse_recipe(text: str) -> list[Step]:
    steps = [Step.parse(s) for s in text.split(",") if s.strip()]
    if not steps:
        raise InvalidInputError("The recipe is empty; give steps like 'prune:0.5,finetune:2'.")
    if any(s.kind == "qat" for s in steps[:-1]):
        raise InvalidInputError("'qat' must be the last step of a recipe (its result is the INT8 Q/DQ model).")
    return steps


@dataclasses.dataclass
class Task:
    """What a recipe needs to know about the model's task.

    ``sample``: a few real inputs (tracing, export, latency). ``loader``: training batches
    ``(x, y)``. ``metric(model)``: the task metric in [0, 1]. ``metric_onnx(path)``: the same
    metric for an ONNX file (used after QAT). ``calib_x``: calibration inputs (QAT, and the
    "reconstruction" channel ranking of the prune step; real training data, never the scored data).
    ``train``: learning rate, seed, threads, BN freezing of every training step.
    """

    sample: np.ndarray
    loader: Any
    metric: Callable[[Any], float]
    metric_onnx: Callable[[str], float] | None = None
    calib_x: np.ndarray | None = None
    train: TrainOptions = TrainOptions(lr=1e-3)
    distill_alpha: float = 0.7


def _epochs(task: Task, n: float) -> TrainOptions:
    return dataclasses.replace(task.train, epochs=max(int(round(n)), 0))


def _step(model: Any, teacher: Any, step: Step, task: Task, out_dir: Path
          ) -> tuple[Any, dict[str, Any]]:
    torch = require("torch", "compression recipes")
    from ._train import fine_tune
    extra: dict[str, Any] = {}
    if step.kind == "prune":
        from .prune_structured import StructuredOptions, prune_structured
        # with real calibration inputs: rank channels by the error left after refitting the next
        # layer, and refit it (far better before fine-tuning than weight magnitude behind BatchNorm)
        calib = None if task.calib_x is None else \
            [torch.from_numpy(np.ascontiguousarray(task.calib_x[i:i + 64])) for i in range(0, len(task.calib_x), 64)]
        opts = StructuredOptions(flops_reduction=step.amount,
                                 importance="reconstruction" if calib else "l2")
        model, rep = prune_structured(model, torch.from_numpy(task.sample[:1]), opts, calib=calib)
        extra["notes"] = f"-{100 * rep.flops_reduction:.1f}% MACs ({opts.importance})"
    elif step.kind == "unstructured":
        from .prune_unstructured import GradualSchedule, prune_gradual
        prune_gradual(model, task.loader, GradualSchedule(final_sparsity=step.amount, steps=2), train=_epochs(task, 1))
        extra["notes"] = f"{100 * step.amount:.0f}% zeros (global)"
    elif step.kind == "sparse24":
        from .sparsity24 import MaskKeeper, check_24_module, prune_24
        masks = prune_24(model)
        fine_tune(model, task.loader, _epochs(task, step.amount), after_step=MaskKeeper(model, masks))
        status = check_24_module(model)
        extra["notes"] = f"{sum(r.is_24 for r in status)}/{len(status)} layers 2:4"
    elif step.kind == "distill":
        from .distill import DistillOptions, distill
        distill(teacher, model, task.loader, DistillOptions(alpha=task.distill_alpha, train=_epochs(task, step.amount)))
    elif step.kind == "finetune":
        fine_tune(model, task.loader, _epochs(task, step.amount))
    elif step.kind == "lowrank":
        from .lowrank import LowRankOptions, factorize
        rows = factorize(model, LowRankOptions(energy=step.amount))
        fine_tune(model, task.loader, _epochs(task, 1))
        extra["notes"] = ", ".join(f"{r.name} r={r.rank} err={r.relative_error:.3f}" for r in rows if r.replaced)
    elif step.kind == "share":
        from .weight_sharing import finetune_codebooks, pack_model, share_weights
        layers = share_weights(model, bits=int(step.amount))
        finetune_codebooks(model, layers, task.loader, dataclasses.replace(task.train, epochs=1, lr=task.train.lr / 10))
        extra["storage_bytes"] = len(pack_model(model, layers))
        extra["notes"] = f"{int(step.amount)}-bit codebooks, packed"
    elif step.kind == "qat":
        from .qat import QatOptions, prepare_qat
        if task.calib_x is None:
            raise InvalidInputError("The qat step needs Task.calib_x (calibration inputs).")
        qm = prepare_qat(model, task.calib_x, QatOptions())
        train(qm.module, task.loader, cross_entropy, _epochs(task, step.amount), description="QAT")
        path = out_dir / "qat.int8.onnx"
        _, check = qm.export(path, task.sample)
        extra["qat"] = (qm, path, check)
        model = qm
    return model, extra


def run_recipe(model: Any, steps: Sequence[Step] | str, task: Task,
               out_dir: str | os.PathLike[str] | None = None, latency_runs: int = 50
               ) -> tuple[Any, list[StepReport]]:
    """Run ``steps`` on a copy of ``model``; returns the final model (a :class:`QatModel` after
    ``qat``) and one :class:`StepReport` for the original and after every step. ONNX files go to
    ``out_dir`` (one per step) when given."""
    if isinstance(steps, str):
        steps = parse_recipe(steps)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    teacher = copy.deepcopy(model).eval()
    current = copy.deepcopy(model).eval()
    reports = [measure("original", current, task.sample, task.metric, out, latency_runs=latency_runs)]
    import tempfile
    with tempfile.TemporaryDirectory(prefix="trt_edge_recipe_") as tmp:
        work = out or Path(tmp)
        for i, step in enumerate(steps, 1):
            with stage(f"recipe step {i}/{len(steps)}: {step.label}"):
                current, extra = _step(current, teacher, step, task, work)
            if "qat" in extra:
                qm, path, check = extra["qat"]
                metric = task.metric_onnx(str(path)) if task.metric_onnx else None
                lat = ort_latency_ms(path, task.sample[:1], runs=latency_runs) if latency_runs else None
                base = measure("qat-float", qm.float_module(), task.sample, None, None, latency_runs=0)
                reports.append(StepReport(f"{i}.{step.label}", base.params, base.macs, path.stat().st_size,
                                          path.stat().st_size, metric, lat, str(path) if out else None,
                                          check["top1_agreement"] == 1.0,
                                          f"INT8 Q/DQ; ORT vs torch top-1 {check['top1_agreement']:.3f}, "
                                          f"SQNR {check['sqnr_db']:.1f} dB"))
            else:
                reports.append(measure(f"{i}.{step.label}", current, task.sample, task.metric, out,
                                       storage_bytes=extra.get("storage_bytes"), latency_runs=latency_runs,
                                       notes=extra.get("notes", "")))
            log.info("after %s:\n%s", step.label, format_reports(reports[-1:]))
    return current, reports
