"""A Runner over a sparsified model (``SparseLinear`` nodes) in ONNX Runtime.

Lives on the runtime side so that ``trt_edge.sparse`` never imports ``runtime``:
``sparse.ort`` rewrites the model for onnxruntime-extensions and registers the
op library; this wraps the result in an :class:`OnnxRuntimeRunner`.
"""
from __future__ import annotations

import dataclasses
import os

import onnx

from ..artifacts import load_onnx
from ..sparse.ort import for_onnxruntime, register_custom_op
from .onnxrt import OnnxRuntimeRunner, OrtOptions


def make_runner(model: onnx.ModelProto | str | os.PathLike[str],
                options: OrtOptions | None = None) -> OnnxRuntimeRunner:
    """An :class:`OnnxRuntimeRunner` for a sparsified model; ``options`` get the op library added."""
    lib = register_custom_op()
    options = options or OrtOptions()
    options = dataclasses.replace(options, custom_op_libraries=(*options.custom_op_libraries, lib))
    proto = model if isinstance(model, onnx.ModelProto) else load_onnx(model)
    return OnnxRuntimeRunner(for_onnxruntime(proto), options)


__all__ = ["make_runner"]
