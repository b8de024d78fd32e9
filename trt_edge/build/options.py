"""Typed options of ``build_engine`` (one field per ``trt-edge build`` flag)."""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Sequence

from ..errors import InvalidInputError
from .profiles import ProfileSpec, ShapeRange

PRECISIONS = ("fp32", "fp16", "int8")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int) -> int:
    """``"2G"``, ``"512MiB"``, ``"1.5g"``, ``1048576`` -> bytes (binary units)."""
    if isinstance(text, int):
        if text < 0:
            raise InvalidInputError(f"Size must be >= 0, got {text}.")
        return text
    m = _SIZE_RE.match(text)
    if not m:
        raise InvalidInputError(f"Bad size '{text}': write e.g. 512M, 2G or a number of bytes.")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclasses.dataclass
class BuildOptions:
    """How to build one engine.

    precision: "fp32" | "fp16" | "int8". On TensorRT 11 (strongly typed) the
        precision comes from the ONNX: fp16 converts the graph with
        ``trt_edge.quant.convert_fp16`` first, int8 needs Q/DQ (quantized here
        from ``ranges``/``calib_data`` when the model has none). On TensorRT 10
        fp16/int8 set the builder flags; int8 without Q/DQ uses the legacy
        entropy calibrator with ``calib_data`` or ``calib_cache``.
    strongly_typed: force (True) or forbid (False) the strongly typed network on
        TensorRT 10; None = automatic (always on for 11).
    profiles: optimization profiles; empty = the model's static shapes, and for
        inputs whose only dynamic axis is the batch, ``default_batch`` (min, opt, max).
    workspace: WORKSPACE memory-pool limit in bytes (None = TensorRT's default,
        the whole device: set it on Jetson, where the GPU shares 4-16 GB with the CPU).
    optimization_level: builder optimization level 0..5 (TensorRT's default is 3).
    timing_cache: file of the persistent timing cache (reused across builds,
        discarded when the TensorRT version or GPU differs); None disables it.
    sparse_weights: allow 2:4 structured-sparse kernels (Ampere+ and Orin).
    dla_core: run on this DLA core (TensorRT 10 on Jetson Orin) with GPU fallback
        when ``gpu_fallback``.
    plugins: plugin libraries to load before parsing (ours from csrc/).
    serialize_plugins: ship the plugin libraries inside the engine
        (``plugins_to_serialize``; needs ``version_compatible``).
    version_compatible: build an engine later TensorRT versions (and the lean
        runtime) can run; ``exclude_lean_runtime`` leaves the lean runtime out
        of the plan (smaller; the target must then have tensorrt_lean).
    hardware_compatibility: None or "ampere_plus" (runs on any Ampere or newer GPU).
    ranges / calib_data / calib_cache: INT8 inputs (see precision).
    calib_method: our calibrator's method for ``calib_data`` ("auto", "entropy",
        "percentile", "max", "mse": ``trt_edge.quant.CalibrationOptions.method``).
    mixed_fp16: with int8 on TensorRT 10, also allow FP16 kernels for the layers
        left in float (trtexec --int8 --fp16).
    legacy_calibrator: on TensorRT 10, calibrate ``calib_data`` with TensorRT's
        own IInt8EntropyCalibrator2 (implicit INT8) instead of inserting Q/DQ.
    allow_tf32: let FP32 layers use TF32 tensor cores (TensorRT's default on Ampere+;
        ~1e-3 relative error). False clears BuilderFlag.TF32 for bit-closer FP32.
    optimize_graph: run ``trt_edge.graph.pipeline.optimize`` (when present) first.
    """

    precision: str = "fp32"
    strongly_typed: bool | None = None
    profiles: Sequence[ProfileSpec] = ()
    default_batch: tuple[int, int, int] | None = (1, 8, 128)
    workspace: int | None = None
    optimization_level: int | None = None
    timing_cache: Path | None = None
    sparse_weights: bool = False
    dla_core: int | None = None
    gpu_fallback: bool = True
    plugins: Sequence[Path] = ()
    serialize_plugins: bool = False
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    hardware_compatibility: str | None = None
    ranges: Path | None = None
    calib_data: Path | None = None
    calib_cache: Path | None = None
    calib_batch_size: int = 8
    calib_method: str = "auto"
    mixed_fp16: bool = False
    legacy_calibrator: bool = False
    allow_tf32: bool = True
    optimize_graph: bool = True
    log_level: str = "warning"

    def __post_init__(self) -> None:
        self.precision = self.precision.lower()
        if self.precision not in PRECISIONS:
            raise InvalidInputError(f"Unknown precision '{self.precision}': choose one of {PRECISIONS}.")
        from ..quant.calibrate import CALIBRATION_METHODS  # quant imports only numpy/onnx at module level
        if self.calib_method not in CALIBRATION_METHODS:
            raise InvalidInputError(f"Unknown calib_method '{self.calib_method}': choose one of "
                                    f"{', '.join(CALIBRATION_METHODS)}.")
        if self.optimization_level is not None and not 0 <= self.optimization_level <= 5:
            raise InvalidInputError(
                f"optimization_level must be 0..5 (TensorRT's default is 3), got {self.optimization_level}.")
        if self.workspace is not None and self.workspace <= 0:
            raise InvalidInputError(f"workspace must be a positive number of bytes, got {self.workspace}.")
        if self.dla_core is not None and self.dla_core < 0:
            raise InvalidInputError(f"dla_core must be >= 0, got {self.dla_core}.")
        if self.serialize_plugins and not self.version_compatible:
            raise InvalidInputError(
                "serialize_plugins needs version_compatible=True (--version-compatible): TensorRT "
                "only ships plugin libraries inside version-compatible engines.")
        if self.exclude_lean_runtime and not self.version_compatible:
            raise InvalidInputError("exclude_lean_runtime only applies with version_compatible=True.")
        if self.hardware_compatibility not in (None, "ampere_plus"):
            raise InvalidInputError(
                f"hardware_compatibility must be None or 'ampere_plus', got {self.hardware_compatibility!r}.")
        if self.default_batch is not None:
            ShapeRange((self.default_batch[0],), (self.default_batch[1],), (self.default_batch[2],))
        if self.calib_batch_size < 1:
            raise InvalidInputError(f"calib_batch_size must be >= 1, got {self.calib_batch_size}.")
        if self.log_level not in ("error", "warning", "info", "verbose"):
            raise InvalidInputError("log_level must be error, warning, info or verbose.")
        self.plugins = tuple(Path(os.fspath(p)) for p in self.plugins)
        for p in self.plugins:
            if not p.exists():
                raise InvalidInputError(f"Plugin library '{p}' does not exist: build csrc/ first "
                                        "(see csrc/README.md) or fix the path.")
        for attr in ("timing_cache", "ranges", "calib_data", "calib_cache"):
            val = getattr(self, attr)
            if val is not None:
                setattr(self, attr, Path(os.fspath(val)))
