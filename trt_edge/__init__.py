"""trt_edge: PyTorch -> ONNX -> optimized, quantized TensorRT / ONNX Runtime engines.

Importing this package needs only numpy and onnx. torch, onnxruntime,
tensorrt and pycuda are imported when a feature that needs them is used.
"""
from __future__ import annotations

import logging

from .errors import (ArtifactError, BuildError, CalibrationError, EngineCompatibilityError,
                     ExportError, GraphPassError, InvalidInputError, MissingDependencyError,
                     QuantizationError, RunnerError, TrtEdgeError, VerificationError)

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "__version__", "TrtEdgeError", "MissingDependencyError", "InvalidInputError", "ArtifactError",
    "ExportError", "VerificationError", "GraphPassError", "RunnerError", "CalibrationError",
    "QuantizationError", "BuildError", "EngineCompatibilityError",
]
