"""Input drift: live inputs against the distribution the model was calibrated on.

A :class:`DriftReference` is made once from the calibration data (the same ``.npz`` the precision
path calibrates on) and stored beside the model (``drift_reference.json``). For every float input
it keeps two histograms with bin edges at the reference's quantiles: one of the values and one of
the per-sample means (which catches a global brightness or gain shift that leaves the value
histogram similar). At serve time :class:`DriftMonitor` folds sampled requests into a sliding
window and scores it with the population stability index (PSI; the usual reading: < 0.1 stable,
0.1-0.25 moderate, > 0.25 a significant shift). The score is exposed as a Prometheus gauge when
``prometheus-client`` is installed, and crossing the threshold logs a warning once per crossing.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..artifacts import atomic_write_json
from ..errors import ArtifactError, InvalidInputError

log = logging.getLogger(__name__)

REFERENCE_NAME = "drift_reference.json"
_EPS = 1e-4
_MAX_VALUES = 4096  # values per observed request that go into the value histogram


def _edges(values: np.ndarray, bins: int) -> np.ndarray:
    qs = np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return np.unique(qs.astype(np.float64))  # ties (e.g. many zeros) merge bins


def _hist(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(edges, values.ravel(), side="right")
    return np.bincount(idx, minlength=len(edges) + 1).astype(np.float64)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two count (or proportion) vectors over the same bins."""
    e = np.asarray(expected, np.float64)
    a = np.asarray(actual, np.float64)
    if e.shape != a.shape or e.sum() <= 0 or a.sum() <= 0:
        raise InvalidInputError("psi needs two non-empty histograms over the same bins.")
    e = np.maximum(e / e.sum(), _EPS)
    a = np.maximum(a / a.sum(), _EPS)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclasses.dataclass
class TensorReference:
    value_edges: list[float]
    value_counts: list[float]
    mean_edges: list[float]
    mean_counts: list[float]
    batch_axis: int = 0


@dataclasses.dataclass
class DriftReference:
    tensors: dict[str, TensorReference]
    samples: int
    source: str = ""
    schema: int = 1

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], *, bins: int = 20, source: str = "") -> "DriftReference":
        tensors = {}
        samples = 0
        for name, arr in arrays.items():
            a = np.asarray(arr)
            if a.dtype.kind != "f" or a.ndim < 1 or a.size == 0:
                continue  # ids/masks: distribution shift there is a different question
            a = a.astype(np.float64)
            if not np.isfinite(a).all():
                raise InvalidInputError(f"Reference data for '{name}' has NaN/inf; clean the calibration data.")
            means = a.reshape(a.shape[0], -1).mean(axis=1)
            # per-sample means: few bins, so a window of a few hundred samples estimates them well
            ve, me = _edges(a, bins), _edges(means, max(4, min(10, a.shape[0] // 50)))
            tensors[name] = TensorReference(ve.tolist(), _hist(a, ve).tolist(), me.tolist(), _hist(means, me).tolist())
            samples = max(samples, a.shape[0])
        if not tensors:
            raise InvalidInputError("No float input in the reference data: drift monitoring watches float inputs.")
        return cls(tensors, samples, source)

    @classmethod
    def from_npz(cls, path: str | os.PathLike[str], **kw: Any) -> "DriftReference":
        p = Path(path)
        try:
            with np.load(p, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"Cannot read reference data '{p}': {exc}") from exc
        return cls.from_arrays(arrays, source=p.name, **kw)

    def save(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_json(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "DriftReference":
        p = Path(path)
        try:
            raw = json.loads(p.read_text())
            tensors = {k: TensorReference(**v) for k, v in raw["tensors"].items()}
            return cls(tensors, int(raw["samples"]), raw.get("source", ""), int(raw.get("schema", 1)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"Drift reference '{p}' is unreadable ({exc}); make it again with "
                                "`trt-edge registry drift-reference`.") from exc


class DriftMonitor:
    """Sliding-window PSI of live inputs against a :class:`DriftReference`. Thread-safe."""

    def __init__(self, reference: DriftReference, *, window: int = 256, threshold: float = 0.25,
                 sample_every: int = 1, model: str = "", min_samples: int = 128,
                 on_score: Callable[[float], None] | None = None) -> None:
        """``on_score``: called with each new score (e.g. a Prometheus gauge's ``set``); default:
        the process-wide ``trt_edge_input_drift_psi`` gauge when prometheus-client is installed."""
        if window < 1 or sample_every < 1:
            raise InvalidInputError("window and sample_every must be >= 1.")
        self.reference = reference
        self.threshold = float(threshold)
        self.sample_every = int(sample_every)
        self.min_samples = int(min_samples)
        self.model = model
        self._lock = threading.Lock()
        self._seen = 0
        self._window: collections.deque[dict[str, tuple[np.ndarray, np.ndarray]]] = collections.deque(maxlen=window)
        self._alarm = False
        if on_score is None:
            gauge = _gauge()
            on_score = gauge.labels(model=model or "model").set if gauge is not None else None
        self._on_score = on_score

    def observe(self, feed: Mapping[str, np.ndarray]) -> None:
        with self._lock:
            self._seen += 1
            if (self._seen - 1) % self.sample_every:
                return
        entry = {}
        for name, ref in self.reference.tensors.items():
            if name not in feed:
                continue
            a = np.asarray(feed[name], np.float64)
            if a.ndim == 0 or a.size == 0:
                continue
            means = a.reshape(a.shape[0], -1).mean(axis=1)
            flat = a.ravel()
            if flat.size > _MAX_VALUES:  # a strided sample keeps a large input's cost to ~50 us
                flat = flat[::flat.size // _MAX_VALUES + 1]
            entry[name] = (_hist(flat, np.asarray(ref.value_edges)), _hist(means, np.asarray(ref.mean_edges)))
        with self._lock:
            self._window.append(entry)
        self._update()

    def scores(self) -> dict[str, float]:
        """PSI per tensor (the larger of the value and per-sample-mean histograms)."""
        with self._lock:
            window = list(self._window)
        out = {}
        for name, ref in self.reference.tensors.items():
            parts = [e[name] for e in window if name in e]
            n = sum(int(p[1].sum()) for p in parts)
            if n < min(self.min_samples, self.reference.samples):
                continue
            vals = np.sum([p[0] for p in parts], axis=0)
            means = np.sum([p[1] for p in parts], axis=0)
            out[name] = max(psi(ref.value_counts, vals), psi(ref.mean_counts, means))
        return out

    def score(self) -> float | None:
        s = self.scores()
        return max(s.values()) if s else None

    def _update(self) -> None:
        s = self.score()
        if s is None:
            return
        if self._on_score is not None:
            self._on_score(s)
        crossed = s > self.threshold
        if crossed and not self._alarm:
            log.warning("input drift on model '%s': PSI %.3f above threshold %.3f (per input: %s)", self.model, s,
                        self.threshold, {k: round(v, 3) for k, v in self.scores().items()})
        elif not crossed and self._alarm:
            log.info("input drift on model '%s' back below threshold: PSI %.3f", self.model, s)
        self._alarm = crossed

    @property
    def alarmed(self) -> bool:
        return self._alarm


_GAUGE: Any = None


def _gauge() -> Any:
    """The process-wide ``trt_edge_input_drift_psi`` gauge (None without prometheus-client)."""
    global _GAUGE
    if _GAUGE is None:
        try:
            from prometheus_client import Gauge
        except ImportError:
            return None
        _GAUGE = Gauge("trt_edge_input_drift_psi", "Population stability index of recent inputs against "
                       "the calibration data (higher: more drift)", ["model"])
    return _GAUGE
