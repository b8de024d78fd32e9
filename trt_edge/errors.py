"""One exception hierarchy for trt_edge.

Every message says what went wrong *and what to do about it*: the user of a
command-line tool cannot read a traceback's mind.
"""
from __future__ import annotations

from typing import Any


class TrtEdgeError(Exception):
    """Base class of every error trt_edge raises on purpose."""


class MissingDependencyError(TrtEdgeError, ImportError):
    """An optional dependency (an "extra") is not installed."""


class InvalidInputError(TrtEdgeError, ValueError):
    """Input supplied by the user (a file, a tensor, an option) is wrong."""


class ArtifactError(TrtEdgeError):
    """An artifact on disk is missing, corrupt, stale or cannot be written."""


class ExportError(TrtEdgeError):
    """torch -> ONNX export failed."""


class VerificationError(TrtEdgeError):
    """Two things that must agree numerically do not.

    ``report`` carries the per-output error figures so callers can show them.
    """

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class GraphPassError(TrtEdgeError):
    """A graph pass failed or produced an invalid model."""


class RunnerError(TrtEdgeError):
    """A runner was used in the wrong state or its backend failed."""


class PoolTimeoutError(RunnerError, TimeoutError):
    """No execution instance of a model became free within the caller's timeout."""


class CalibrationError(TrtEdgeError):
    """INT8 calibration failed (no data, bad ranges, stale cache...)."""


class QuantizationError(TrtEdgeError):
    """Q/DQ insertion or precision conversion failed."""


class BuildError(TrtEdgeError):
    """Building a TensorRT engine failed."""


class EngineCompatibilityError(ArtifactError):
    """An engine was built for another TensorRT version or GPU."""


class SignatureError(ArtifactError):
    """A model's signature is missing, does not verify, or is not trusted (OpenSSF Model Signing)."""


class ModelImportError(TrtEdgeError):
    """A model from another framework (e.g. a .tflite file) cannot be converted to ONNX."""
