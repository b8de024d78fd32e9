"""Runners and loaded models: one interface for every backend.

``Model.load(artifact, instances=N)`` (or ``load_model``) is the serving API: a
typed signature with the batch axis and limits, identity (name, version,
sha256), backend facts, and N execution instances made up front and lent by a
pool to one caller at a time (``trt_edge.runtime.model``).

Runners are the backend layer underneath: ``OnnxRuntimeRunner`` is the embedded
default; the TensorRT runner lives in ``trt_edge.runtime.tensorrt`` and imports
tensorrt/pycuda only when used. ``open_runner(artifact)`` picks the runner from
the artifact's kind.
"""
from .base import Runner, RunnerSlot
from .factory import open_runner, tensorrt_available
from .identity import BackendInfo, ModelIdentity
from .model import CallTiming, InferResult, MemoryBound, Model, ModelDescription, load_model
from .onnxrt import OnnxRuntimeRunner, OrtOptions, run_onnx
from .pool import ExecInstance, InstancePool, PoolStats
from .signature import BatchLimits, ModelSignature, TensorSig

__all__ = ["Runner", "RunnerSlot", "OnnxRuntimeRunner", "OrtOptions", "run_onnx", "open_runner",
           "tensorrt_available", "Model", "load_model", "InferResult", "CallTiming", "ModelDescription",
           "MemoryBound", "ModelIdentity", "BackendInfo", "ModelSignature", "TensorSig", "BatchLimits",
           "ExecInstance", "InstancePool", "PoolStats"]
