"""Calibration results: per-tensor ranges with the model hash and settings that made them.

A ranges file is the single source of truth for INT8: it becomes either Q/DQ
nodes (:mod:`trt_edge.quant.qdq`) or a TensorRT calibration cache
(:mod:`trt_edge.quant.trt_cache`). It records the SHA-256 of the model it was
calibrated on; loading it for another model is refused, never silently used.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import onnx

from ..artifacts import atomic_write_json, model_hash, tool_versions, write_sidecar
from ..errors import ArtifactError, CalibrationError
from .methods import INT8_MAX, MIN_AMAX

RANGES_SCHEMA = 1
RANGES_KIND = "trt-edge-calibration-ranges"
# Ranges a file may hold (see CalibrationResult.validate): larger activations have no
# useful INT8 grid, and an amax far above what calibration saw is a damaged file.
MAX_AMAX = 1e15
_OBSERVED_SLACK = 1.1


def canonical_model_hash(model: onnx.ModelProto | str | os.PathLike[str]) -> str:
    """SHA-256 of a model's deterministic serialization (a path is loaded first).

    Hashing the parsed model, not the file, makes the hash independent of how the
    file was written (external data, protobuf field order).
    """
    if not isinstance(model, onnx.ModelProto):
        from ..artifacts import load_onnx
        model = load_onnx(model)
    return model_hash(model)


def _counts_values(settings: Mapping[str, Any]) -> bool:
    """Whether ``count`` is the number of finite values seen (histogram methods; "max" keeps none)."""
    return str(settings.get("method", "")) != "max"


@dataclasses.dataclass
class TensorRange:
    """One tensor's symmetric range. ``amax`` is the clipping threshold of |x|."""

    amax: float
    observed_amax: float = 0.0     # the largest |x| seen (what "max" would give)
    count: int = 0                 # values seen
    method: str = ""               # the method that chose amax (set by method="auto")

    @property
    def scale(self) -> float:
        return max(self.amax, MIN_AMAX) / INT8_MAX


@dataclasses.dataclass
class CalibrationResult:
    """Per-tensor ranges plus what they are valid for.

    ``model_hash``: canonical hash of the FP32 model calibrated;
    ``settings``: the :class:`CalibrationOptions` used (as a dict);
    ``num_samples``/``num_batches``: how much data was seen.
    """

    ranges: dict[str, TensorRange]
    model_hash: str
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_samples: int = 0
    num_batches: int = 0
    created: str = dataclasses.field(default_factory=lambda: _dt.datetime.now(
        _dt.timezone.utc).isoformat(timespec="seconds"))
    versions: dict[str, str] = dataclasses.field(default_factory=tool_versions)

    def __contains__(self, name: str) -> bool:
        return name in self.ranges

    def __len__(self) -> int:
        return len(self.ranges)

    def amax(self, name: str) -> float:
        try:
            return self.ranges[name].amax
        except KeyError:
            raise CalibrationError(f"No calibrated range for tensor '{name}'. Recalibrate with this "
                                   "tensor included (check exclude options).") from None

    def scale(self, name: str) -> float:
        return self.amax(name) / INT8_MAX if self.amax(name) > MIN_AMAX else MIN_AMAX / INT8_MAX

    def scales(self) -> dict[str, float]:
        return {n: r.scale for n, r in self.ranges.items()}

    def check_model(self, model: onnx.ModelProto | str | os.PathLike[str] | None = None,
                    expected_hash: str | None = None, what: str = "these ranges") -> None:
        """Raise :class:`ArtifactError` if the ranges were calibrated on another model."""
        expected = expected_hash or (canonical_model_hash(model) if model is not None else None)
        if expected is None or expected == self.model_hash:
            return
        raise ArtifactError(
            f"Stale calibration: {what} were computed for model sha256 {self.model_hash[:12]}..., "
            f"but the model given has sha256 {expected[:12]}.... The model changed since calibration; "
            "re-run `trt-edge calibrate` on the current model (or pass the model it was made for).")

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RANGES_SCHEMA,
            "kind": RANGES_KIND,
            "model_sha256": self.model_hash,
            "settings": self.settings,
            "num_samples": self.num_samples,
            "num_batches": self.num_batches,
            "created": self.created,
            "tool_versions": self.versions,
            "tensors": {n: dataclasses.asdict(r) | {"scale": r.scale}
                        for n, r in sorted(self.ranges.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "ranges") -> "CalibrationResult":
        if data.get("kind") != RANGES_KIND:
            raise ArtifactError(f"'{source}' is not a trt-edge ranges file (kind={data.get('kind')!r}). "
                                "Create one with `trt-edge calibrate`.")
        if int(data.get("schema", 0)) > RANGES_SCHEMA:
            raise ArtifactError(f"'{source}' has schema {data['schema']}, newer than this trt-edge "
                                f"understands ({RANGES_SCHEMA}). Upgrade trt-edge.")
        try:
            ranges = {n: TensorRange(float(t["amax"]), float(t.get("observed_amax", 0.0)),
                                     int(t.get("count", 0)), str(t.get("method", "")))
                      for n, t in data["tensors"].items()}
            result = cls(ranges=ranges, model_hash=str(data["model_sha256"]),
                         settings=dict(data.get("settings", {})),
                         num_samples=int(data.get("num_samples", 0)),
                         num_batches=int(data.get("num_batches", 0)),
                         created=str(data.get("created", "")),
                         versions=dict(data.get("tool_versions", {})))
            unseen = sorted(n for n, t in data["tensors"].items()
                            if isinstance(t, Mapping) and "count" in t and int(t["count"]) == 0) \
                if _counts_values(result.settings) else []
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"'{source}' is a damaged ranges file ({exc!r}). Recalibrate.") from exc
        result.validate(source, unseen=unseen)
        return result

    def validate(self, source: str = "these ranges", unseen: list[str] | None = None) -> None:
        """Refuse ranges that would give a broken INT8 model, naming the tensors.

        Every ``amax`` must be finite, positive, at most :data:`MAX_AMAX` and not far
        above the largest value seen (``observed_amax``, when recorded); ``unseen``
        (default: every tensor with ``count == 0``) lists tensors that saw no finite value.
        """
        if unseen is None:
            unseen = sorted(n for n, r in self.ranges.items() if r.count == 0) \
                if _counts_values(self.settings) else []
        problems: list[str] = []
        for name, r in sorted(self.ranges.items()):
            if not math.isfinite(r.amax) or r.amax <= 0:
                problems.append(f"'{name}' has amax {r.amax} (must be finite and > 0)")
            elif r.amax > MAX_AMAX:
                problems.append(f"'{name}' has amax {r.amax:g}, over {MAX_AMAX:g}")
            elif math.isfinite(r.observed_amax) and r.observed_amax > 0 \
                    and r.amax > r.observed_amax * _OBSERVED_SLACK:
                problems.append(f"'{name}' has amax {r.amax:g}, far above the largest value seen "
                                f"({r.observed_amax:g})")
        problems += [f"'{name}' saw no finite value (every value was NaN/inf, or the tensor was "
                     "never produced)" for name in unseen]
        if problems:
            shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
            raise CalibrationError(
                f"{source}: {len(problems)} tensor range(s) cannot be used for INT8: {shown}. "
                "Check the calibration data for NaN/inf and recalibrate with "
                "`trt-edge calibrate`, or keep those tensors in float (--exclude-nodes).")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ranges JSON atomically, plus a ``<path>.json`` sidecar."""
        out = atomic_write_json(path, self.to_dict())
        write_sidecar(out, "calibration-ranges", sources={"model": f"sha256:{self.model_hash}"},
                      options=self.settings, extra={"num_tensors": len(self.ranges)})
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str], expected_model_hash: str | None = None,
             model: onnx.ModelProto | str | os.PathLike[str] | None = None) -> "CalibrationResult":
        """Read a ranges file; refuse it if it was made for another model.

        Give ``expected_model_hash`` (see :func:`canonical_model_hash`) or ``model``.
        """
        p = Path(path)
        if not p.exists():
            raise ArtifactError(f"Ranges file '{p}' does not exist. Create it with `trt-edge calibrate`.")
        if p.is_dir():
            raise ArtifactError(f"Ranges file '{p}' is a directory: give the .json file `trt-edge "
                                "calibrate -o` wrote.")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ArtifactError(f"'{p}' is not a text file (a binary file?), so not a ranges file: give "
                                "the .json file `trt-edge calibrate -o` wrote.") from exc
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"'{p}' is not valid JSON ({exc}). Recalibrate.") from exc
        except OSError as exc:
            raise ArtifactError(f"Cannot read the ranges file '{p}': {exc.strerror or exc}.") from exc
        if not isinstance(data, Mapping):
            raise ArtifactError(f"'{p}' holds a JSON {type(data).__name__}, not a trt-edge ranges file "
                                "(a JSON object with 'kind' and 'tensors'). Create one with "
                                "`trt-edge calibrate`.")
        result = cls.from_dict(data, str(p))
        result.check_model(model, expected_model_hash, what=f"the ranges in '{p}'")
        return result
