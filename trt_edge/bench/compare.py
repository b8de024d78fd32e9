"""Run two models on the same inputs and report how far their outputs differ.

``compare(reference, candidate)``: each side is an artifact (.onnx, engine,
ModelProto), a Runner, or - for the reference - a torch ``nn.Module``. The
reference comes first (the FP32 model, the torch module); the figures are those
of :func:`trt_edge.numerics.compare_outputs`: per output max abs / rel error,
normalised MSE, SQNR in dB, cosine, and top-1 agreement for classifiers.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx

from ..artifacts import atomic_write_json, machine_info, to_jsonable, tool_versions
from ..errors import InvalidInputError
from ..numerics import TOLERANCES, ComparisonReport, Tolerance, compare_outputs
from ..runtime.base import Runner
from ..runtime.factory import open_runner
from ..runtime.onnxrt import OrtOptions
from .inputs import InputOptions, cast_feed, make_feed

log = logging.getLogger(__name__)

_CLASSIFIER_HINTS = ("logit", "prob", "score", "class", "pred")


@dataclasses.dataclass
class CompareOptions:
    """How to compare.

    ``inputs``: the feed (file or random; see InputOptions). ``runs``: number of
    random feeds (seeds ``seed, seed+1, ...``), all pooled into one report;
    ignored when a file or arrays are given. ``tolerance``: a Tolerance or one of
    "fp32", "export", "fp16" - then each output also gets pass/fail; None reports
    figures only. ``classifier``: report top-1 agreement; None decides per output
    from its name (logits/probs/scores...) and rank >= 2.
    """

    inputs: InputOptions = dataclasses.field(default_factory=InputOptions)
    runs: int = 1
    tolerance: Tolerance | str | None = None
    classifier: bool | None = None

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise InvalidInputError(f"runs must be >= 1, got {self.runs}.")
        if isinstance(self.tolerance, str):
            if self.tolerance not in TOLERANCES:
                raise InvalidInputError(f"Unknown tolerance '{self.tolerance}': choose one of "
                                        f"{sorted(TOLERANCES)} or give rtol/atol.")
            self.tolerance = TOLERANCES[self.tolerance]


@dataclasses.dataclass
class CompareResult:
    reference: dict[str, Any]
    candidate: dict[str, Any]
    input_shapes: dict[str, list[int]]
    runs: int
    report: ComparisonReport
    output_map: dict[str, str]   # reference output name -> candidate output name
    machine: dict[str, Any]
    tool_versions: dict[str, str]
    created: str

    @property
    def passed(self) -> bool:
        return self.report.passed

    def to_dict(self) -> dict[str, Any]:
        d = to_jsonable(self)
        d["passed"] = self.passed
        return d

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_json(path, self.to_dict())

    def table(self) -> str:
        head = (f"reference  {self.reference.get('artifact') or self.reference.get('runner')} "
                f"[{self.reference.get('backend')}]\n"
                f"candidate  {self.candidate.get('artifact') or self.candidate.get('runner')} "
                f"[{self.candidate.get('backend')}]\n"
                f"inputs     " + ", ".join(f"{k}{tuple(v)}" for k, v in self.input_shapes.items())
                + f" x {self.runs} run(s)\n")
        tol = self.report.tolerance
        foot = "" if tol is None else (f"\ntolerance rtol={tol.rtol:g} atol={tol.atol:g}: "
                                       + ("PASSED" if self.passed else "FAILED"))
        return head + self.report.table() + foot


def _open(side: Any, backend: str, ort_options: OrtOptions | None, trt_options: Any,
          specs_for_torch: list | None, output_names: list[str] | None = None) -> Runner:
    if isinstance(side, (Runner, str, os.PathLike, bytes, onnx.ModelProto)):
        return open_runner(side, backend, ort_options=ort_options, trt_options=trt_options)
    if callable(side):  # a torch module (or any callable taking arrays as tensors)
        if specs_for_torch is None:
            raise InvalidInputError("Pass the torch module as the reference (first argument): its input "
                                    "names, dtypes and shapes come from the candidate artifact or runner.")
        from ..runtime.torch_module import TorchModuleRunner
        return TorchModuleRunner(side, specs_for_torch, output_names)
    raise InvalidInputError(f"Cannot compare a {type(side).__name__}: give a path, a Runner or a torch module.")


def _match_outputs(ref: Mapping[str, np.ndarray], cand: Mapping[str, np.ndarray]) -> dict[str, str]:
    common = [n for n in ref if n in cand]
    if common:
        if len(common) < len(ref):
            log.warning("Outputs %s exist only in the reference; they are not compared.",
                        [n for n in ref if n not in cand])
        return {n: n for n in common}
    if len(ref) == len(cand):
        log.warning("Output names differ (%s vs %s); matching them by position.", list(ref), list(cand))
        return dict(zip(ref, cand))
    raise InvalidInputError(f"The models share no output names (reference {list(ref)}, candidate {list(cand)}) "
                            "and have different output counts; they cannot be compared.")


def _is_classifier(name: str, arr: np.ndarray, flag: bool | None) -> bool:
    if flag is not None:
        return flag and arr.ndim >= 2
    return arr.ndim >= 2 and arr.shape[-1] > 1 and any(h in name.lower() for h in _CLASSIFIER_HINTS)


def compare(reference: Any, candidate: Any, options: CompareOptions | None = None, *,
            backend_reference: str = "auto", backend_candidate: str = "auto",
            ort_options: OrtOptions | None = None, trt_options: Any = None) -> CompareResult:
    """Run both sides on identical inputs; report the candidate's error against the reference.

    Float inputs are cast to each side's input dtype (so an FP16-I/O model can be
    compared with its FP32 source). Runners passed in inactive are activated for
    the comparison and released after.
    """
    options = options or CompareOptions()
    is_module = not isinstance(reference, (Runner, str, os.PathLike, bytes, onnx.ModelProto)) \
        and callable(reference)
    cand = _open(candidate, backend_candidate, ort_options, trt_options, None)
    opened: list[Runner] = []
    try:
        if not cand.is_active:
            cand.activate()
            opened.append(cand)
        # A torch module's inputs and outputs take the candidate artifact's names.
        ref = _open(reference, backend_reference, ort_options, trt_options,
                    cand.input_specs() if is_module else None, cand.output_names if is_module else None)
        if not ref.is_active:
            ref.activate()
            opened.append(ref)
        feeds = _feeds(ref, options)
        pieces, split = _split_for_fixed_batch(feeds, ref, cand)
        ref_parts: dict[str, list[np.ndarray]] = {}
        cand_parts: dict[str, list[np.ndarray]] = {}
        output_map: dict[str, str] = {}
        for feed, rows in pieces:
            r = ref.infer(cast_feed(feed, ref.input_specs()))
            c = cand.infer(cast_feed(feed, cand.input_specs()))
            output_map = output_map or _match_outputs(r, c)
            for rn, cn in output_map.items():
                ref_parts.setdefault(rn, []).append(_real_rows(np.asarray(r[rn]), feed, rows))
                cand_parts.setdefault(rn, []).append(_real_rows(np.asarray(c[cn]), feed, rows))
        pool = _concat if split else _pool
        ref_out = {n: pool(v) for n, v in ref_parts.items()}
        cand_out = {n: pool(v) for n, v in cand_parts.items()}
        tol = options.tolerance if isinstance(options.tolerance, Tolerance) else None
        comparisons = []
        for name in ref_out:
            rep = compare_outputs({name: cand_out[name]}, {name: ref_out[name]}, tol,
                                  classifier=_is_classifier(name, ref_out[name], options.classifier))
            comparisons.extend(rep.outputs)
        report = ComparisonReport(comparisons, tol)
        ref_desc = _describe(ref, reference)
        cand_desc = _describe(cand, candidate)
    finally:
        for runner in opened:
            runner.deactivate()
    return CompareResult(reference=ref_desc, candidate=cand_desc,
                         input_shapes={k: list(v.shape) for k, v in feeds[0].items()}, runs=len(feeds),
                         report=report, output_map=output_map, machine=machine_info(),
                         tool_versions=tool_versions(),
                         created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))


def _feeds(runner: Runner, options: CompareOptions) -> list[dict[str, np.ndarray]]:
    specs = runner.input_specs()
    if options.inputs.inputs is not None:
        return [make_feed(specs, options.inputs)]
    return [make_feed(specs, dataclasses.replace(options.inputs, seed=options.inputs.seed + i))
            for i in range(options.runs)]


def _split_for_fixed_batch(feeds: list[dict[str, np.ndarray]], *runners: Runner
                           ) -> tuple[list[tuple[dict[str, np.ndarray], int]], bool]:
    """Feeds as the runners can take them: a side with a fixed batch (a static ``1x3x224x224``
    engine) gets each feed split into batches of that size (the last padded by repeating its
    last row, whose outputs are then dropped). Returns ``(feed, real rows)`` pairs and whether
    anything was split (then the outputs are concatenated on axis 0)."""
    from ..quant.batching import fixed_batch, split_feed_counted

    fixed = {b for b in (fixed_batch(r.input_specs()) for r in runners) if b is not None}
    if len(fixed) > 1:
        raise InvalidInputError(f"The two models have different fixed batch sizes {sorted(fixed)}; "
                                "compare models exported with the same batch (or a dynamic one).")
    batch = fixed.pop() if fixed else None
    if batch is None or all(batch_rows(f) == batch for f in feeds):
        return [(f, batch_rows(f)) for f in feeds], False
    log.info("a model has a fixed batch of %d: running the inputs in batches of %d", batch, batch)
    return [piece for f in feeds for piece in split_feed_counted(f, batch)], True


def batch_rows(feed: dict[str, np.ndarray]) -> int:
    first = next(iter(feed.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _real_rows(out: np.ndarray, feed: dict[str, np.ndarray], rows: int) -> np.ndarray:
    """Drop the outputs of padding rows (when the output carries the batch on axis 0)."""
    n = batch_rows(feed)
    return out[:rows] if rows < n and out.ndim and out.shape[0] == n else out


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    if all(p.ndim and p.shape[1:] == parts[0].shape[1:] for p in parts):
        return np.concatenate(parts)
    return np.concatenate([p.reshape(-1) for p in parts])


def _pool(parts: list[np.ndarray]) -> np.ndarray:
    """One array per output over all runs (stacked on a new axis when shapes agree)."""
    if len(parts) == 1:
        return parts[0]
    if all(p.shape == parts[0].shape for p in parts):
        return np.stack(parts)
    return np.concatenate([p.reshape(-1) for p in parts])  # shapes vary: element-wise figures still hold


def _describe(runner: Runner, source: Any) -> dict[str, Any]:
    desc = dict(runner.describe())
    if isinstance(source, (str, os.PathLike)):
        desc["artifact"] = os.fspath(source)
    return desc


__all__ = ["CompareOptions", "CompareResult", "compare"]
