"""Task metrics of a classifier artifact on labelled data.

Labelled data is a .npz with the labels in ``y`` (integer class ids, shape [N])
and the inputs either in ``x`` (single-input models) or under the model's input
names (each [N, ...]). The model runs in batches; predictions are the argmax of
the chosen output's last axis (a single-logit output is thresholded at 0).
Metrics: accuracy, top-k accuracy, per-class precision / recall / F1 / support,
macro and weighted averages, and the confusion matrix (rows = true class).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..artifacts import atomic_write_json, machine_info, sha256_file, to_jsonable, tool_versions
from ..errors import InvalidInputError
from ..log import progress
from ..onnx_io import TensorSpec
from ..runtime.factory import open_runner
from ..runtime.onnxrt import OrtOptions
from .inputs import cast_feed

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EvalOptions:
    """``batch_size``: rows per inference (a model with a fixed batch uses its own and
    pads the last batch). ``output``: which output holds the class scores (default:
    the first). ``top_k``: also report top-k accuracy (skipped when k >= classes).
    ``limit``: evaluate only the first N rows. ``class_names``: labels for the table."""

    batch_size: int = 256
    output: str | None = None
    top_k: int = 5
    limit: int | None = None
    class_names: Sequence[str] | None = None
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.top_k < 1:
            raise InvalidInputError(f"top_k must be >= 1, got {self.top_k}.")
        if self.limit is not None and self.limit < 1:
            raise InvalidInputError(f"limit must be >= 1, got {self.limit}.")


@dataclasses.dataclass
class ClassMetrics:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclasses.dataclass
class ClassificationMetrics:
    accuracy: float
    top_k: int | None
    top_k_accuracy: float | None
    per_class: list[ClassMetrics]
    macro_precision: float
    macro_recall: float
    macro_f1: float
    weighted_f1: float
    confusion_matrix: list[list[int]]   # [true][predicted]
    num_samples: int


def classification_metrics(y_true: np.ndarray, scores_or_pred: np.ndarray, num_classes: int | None = None,
                           top_k: int = 5, class_names: Sequence[str] | None = None) -> ClassificationMetrics:
    """Metrics from labels and either scores [N, C] or predicted ids [N].

    Precision of a class never predicted (and recall of a class absent from the
    labels) is reported as 0, as scikit-learn does with ``zero_division=0``.
    """
    y = np.asarray(y_true).reshape(-1).astype(np.int64)
    s = np.asarray(scores_or_pred)
    if s.ndim == 2:
        if s.shape[1] == 1:  # one logit: positive class when > 0
            pred = (s[:, 0] > 0).astype(np.int64)
            c_scores = None
            n_out = 2
        else:
            pred = np.argmax(s, axis=1)
            c_scores = s
            n_out = s.shape[1]
    elif s.ndim == 1:
        pred = s.astype(np.int64)
        c_scores = None
        n_out = int(pred.max()) + 1 if pred.size else 0
    else:
        raise InvalidInputError(f"Scores must be [N, classes] or predictions [N]; got shape {s.shape}.")
    if pred.shape[0] != y.shape[0]:
        raise InvalidInputError(f"{pred.shape[0]} predictions but {y.shape[0]} labels.")
    if y.size == 0:
        raise InvalidInputError("No labelled samples to evaluate.")
    if y.min() < 0:
        raise InvalidInputError("Labels must be non-negative class ids.")
    n = max(int(num_classes or 0), n_out, int(y.max()) + 1)
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    if len(names) < n:
        names += [str(i) for i in range(len(names), n)]
    per_class = [ClassMetrics(names[i], float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
                 for i in range(n)]
    k = top_k if c_scores is not None and top_k < c_scores.shape[1] else None
    topk_acc = None
    if k is not None and c_scores is not None:
        top = np.argpartition(-c_scores, k - 1, axis=1)[:, :k]
        topk_acc = float(np.mean(np.any(top == y[:, None], axis=1)))
    present = support > 0  # macro averages over classes that occur in the labels
    return ClassificationMetrics(
        accuracy=float(np.mean(pred == y)), top_k=k, top_k_accuracy=topk_acc, per_class=per_class,
        macro_precision=float(precision[present].mean()), macro_recall=float(recall[present].mean()),
        macro_f1=float(f1[present].mean()), weighted_f1=float(np.average(f1, weights=support)),
        confusion_matrix=cm.tolist(), num_samples=int(y.size))


@dataclasses.dataclass
class EvalResult:
    artifact: str | None
    artifact_sha256: str | None
    data: str | None
    backend: str
    runner: dict[str, Any]
    output: str
    metrics: ClassificationMetrics
    seconds: float
    machine: dict[str, Any]
    tool_versions: dict[str, str]
    created: str

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_json(path, self.to_dict())

    def table(self, max_classes: int = 30) -> str:
        m = self.metrics
        lines = [f"artifact  {self.artifact or '(in memory)'}  [{self.backend}]",
                 f"data      {self.data or '(arrays)'}: {m.num_samples} samples, output '{self.output}'",
                 f"accuracy  {m.accuracy:.4f}" + (f"   top-{m.top_k} {m.top_k_accuracy:.4f}" if m.top_k else ""),
                 f"macro     precision {m.macro_precision:.4f}  recall {m.macro_recall:.4f}  "
                 f"F1 {m.macro_f1:.4f}   weighted F1 {m.weighted_f1:.4f}",
                 "", f"{'class':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}"]
        for c in m.per_class[:max_classes]:
            lines.append(f"{c.label[:15]:<16}{c.precision:>10.4f}{c.recall:>10.4f}{c.f1:>10.4f}{c.support:>9d}")
        if len(m.per_class) > max_classes:
            lines.append(f"... {len(m.per_class) - max_classes} more classes in the JSON")
        if len(m.confusion_matrix) <= 12:
            lines += ["", "confusion matrix (rows: true, columns: predicted)"]
            lines += [" ".join(f"{v:>5d}" for v in row) for row in m.confusion_matrix]
        return "\n".join(lines)


def load_labelled(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Arrays of a labelled .npz (must hold ``y``)."""
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"Labelled data '{p}' does not exist.")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"Cannot read '{p}' as .npz ({exc}); save it with np.savez(path, x=..., y=...).") \
            from exc
    if "y" not in arrays:
        raise InvalidInputError(f"'{p}' has no 'y' array (labels); it has {sorted(arrays)}.")
    return arrays


def _inputs_from(arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], source: str
                 ) -> dict[str, np.ndarray]:
    names = [s.name for s in specs]
    if all(n in arrays for n in names):
        return {n: arrays[n] for n in names}
    if len(names) == 1 and "x" in arrays:
        return {names[0]: arrays["x"]}
    raise InvalidInputError(f"{source} must hold the inputs as 'x' (single-input models) or under the "
                            f"model's input names {names}; it has {sorted(arrays)}.")


def evaluate(artifact: Any, data: str | os.PathLike[str] | Mapping[str, np.ndarray],
             options: EvalOptions | None = None, *, backend: str = "auto",
             ort_options: OrtOptions | None = None, trt_options: Any = None) -> EvalResult:
    """Run ``artifact`` over labelled ``data`` (a .npz path or a dict with ``y``) and score it."""
    options = options or EvalOptions()
    arrays = load_labelled(data) if isinstance(data, (str, os.PathLike)) else dict(data)
    if "y" not in arrays:
        raise InvalidInputError(f"Labelled data needs a 'y' array; it has {sorted(arrays)}.")
    runner = open_runner(artifact, backend, ort_options=ort_options, trt_options=trt_options)
    owns = not runner.is_active
    if owns:
        runner.activate()
    try:
        specs = runner.input_specs()
        inputs = cast_feed(_inputs_from(arrays, specs, "Labelled data"), specs)
        y = np.asarray(arrays["y"]).reshape(-1)
        n = y.shape[0]
        for name, arr in inputs.items():
            if arr.shape[0] != n:
                raise InvalidInputError(f"Input '{name}' has {arr.shape[0]} rows but 'y' has {n} labels.")
        if options.limit is not None:
            n = min(n, options.limit)
            y = y[:n]
        out_names = runner.output_names
        output = options.output or out_names[0]
        if output not in out_names:
            raise InvalidInputError(f"Output '{output}' is not one of the model's outputs {out_names}.")
        batch, fixed = _batch_size(specs, options.batch_size)
        scores: list[np.ndarray] = []
        t0 = time.perf_counter()
        starts = range(0, n, batch)
        for start in progress(starts, len(starts), f"eval {runner.name}", enabled=options.show_progress):
            stop = min(start + batch, n)
            feed = {k: v[start:stop] for k, v in inputs.items()}
            rows = stop - start
            if fixed and rows < batch:  # a fixed-batch model: pad with copies of the last row
                feed = {k: np.concatenate([v, np.repeat(v[-1:], batch - rows, axis=0)]) for k, v in feed.items()}
            out = np.asarray(runner.infer(feed)[output])[:rows]
            scores.append(out.reshape(rows, -1))
        seconds = time.perf_counter() - t0
        description = runner.describe()
    finally:
        if owns:
            runner.deactivate()
    metrics = classification_metrics(y, np.concatenate(scores), top_k=options.top_k,
                                     class_names=options.class_names)
    art_name: str | None = os.fspath(artifact) if isinstance(artifact, (str, os.PathLike)) else None
    return EvalResult(
        artifact=art_name,
        artifact_sha256=sha256_file(art_name) if art_name and Path(art_name).is_file() else None,
        data=os.fspath(data) if isinstance(data, (str, os.PathLike)) else None,
        backend=runner.backend, runner=description, output=output, metrics=metrics, seconds=seconds,
        machine=machine_info(), tool_versions=tool_versions(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))


def _batch_size(specs: Sequence[TensorSpec], wanted: int) -> tuple[int, bool]:
    leads = {s.shape[0] for s in specs if s.shape}
    fixed = [d for d in leads if isinstance(d, int) and d >= 0]
    if fixed:
        return int(fixed[0]), True
    return wanted, False


__all__ = ["EvalOptions", "EvalResult", "ClassificationMetrics", "ClassMetrics", "classification_metrics",
           "evaluate", "load_labelled"]
