"""Runners: one interface for every backend.

``OnnxRuntimeRunner`` is the embedded default; the TensorRT runner lives in
``trt_edge.runtime.tensorrt`` and imports tensorrt/pycuda only when used.
"""
from .base import Runner
from .onnxrt import OnnxRuntimeRunner, OrtOptions, run_onnx

__all__ = ["Runner", "OnnxRuntimeRunner", "OrtOptions", "run_onnx"]
