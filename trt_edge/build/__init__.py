"""TensorRT engine building (TensorRT 10 and 11), engine metadata and compatibility.

Importing this package needs neither TensorRT nor pycuda: they are imported by
the functions that use them. Without TensorRT, :func:`build` writes a
deployable ONNX artifact for the ONNX Runtime backend instead (and says so).
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from .fallback import FallbackResult, build_onnx_artifact, fallback_output_path
from .metadata import (EngineMetadata, GpuInfo, check_engine_compatible, query_gpu,
                       read_engine_metadata, write_engine_metadata)
from .options import BuildOptions, parse_size
from .precision import GraphPrecision, PrecisionPlan, plan_precision
from .profiles import ProfileSpec, ShapeRange, parse_profile, parse_profiles, resolve_profiles
from .versions import (TrtVersion, lean_runtime_available, load_tensorrt, parse_version,
                       tensorrt_available, tensorrt_version)

if TYPE_CHECKING:  # pragma: no cover
    from .builder import BuildResult

log = logging.getLogger(__name__)


def build(onnx_path: str | os.PathLike[str], output: str | os.PathLike[str],
          options: BuildOptions | None = None, *, allow_fallback: bool = True) -> "BuildResult | FallbackResult":
    """Build a TensorRT engine, or (without TensorRT) the ONNX Runtime artifact.

    ``allow_fallback=False`` raises MissingDependencyError instead of falling back.
    """
    if tensorrt_available():
        from .builder import build_engine

        return build_engine(onnx_path, output, options)
    if not allow_fallback:
        load_tensorrt("building a TensorRT engine")  # raises with the install hint
    log.warning("TensorRT is not installed: writing an ONNX artifact for the ONNX Runtime backend "
                "instead of a TensorRT engine")
    return build_onnx_artifact(onnx_path, output, options)


def __getattr__(name: str):  # lazy: builder imports nothing heavy, but keep the import light
    if name in ("BuildResult", "build_engine"):
        from . import builder

        return getattr(builder, name)
    raise AttributeError(name)


__all__ = [
    "build", "BuildOptions", "parse_size", "BuildResult", "build_engine", "FallbackResult",
    "build_onnx_artifact", "fallback_output_path", "EngineMetadata", "GpuInfo",
    "check_engine_compatible", "query_gpu", "read_engine_metadata", "write_engine_metadata",
    "GraphPrecision", "PrecisionPlan", "plan_precision", "ProfileSpec", "ShapeRange",
    "parse_profile", "parse_profiles", "resolve_profiles", "TrtVersion", "parse_version",
    "tensorrt_available", "tensorrt_version", "lean_runtime_available", "load_tensorrt",
]
