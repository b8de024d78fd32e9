"""Runners: one interface for every backend.

``OnnxRuntimeRunner`` is the embedded default; the TensorRT runner lives in
``trt_edge.runtime.tensorrt`` and imports tensorrt/pycuda only when used.
``open_runner(artifact)`` picks the runner from the artifact's kind.
"""
from .base import Runner
from .factory import open_runner, tensorrt_available
from .onnxrt import OnnxRuntimeRunner, OrtOptions, run_onnx

__all__ = ["Runner", "OnnxRuntimeRunner", "OrtOptions", "run_onnx", "open_runner", "tensorrt_available"]
