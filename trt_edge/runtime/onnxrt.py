"""ONNX Runtime runner: the embedded default backend (CPU here, CUDA EP where present)."""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from .._lazy import require
from ..errors import InvalidInputError, RunnerError
from ..onnx_io import TensorSpec, graph_inputs, graph_outputs
from .base import Runner

log = logging.getLogger(__name__)

_GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


@dataclasses.dataclass
class OrtOptions:
    """Options for :class:`OnnxRuntimeRunner`.

    ``intra_op_threads``/``inter_op_threads``: 0 lets ONNX Runtime choose.
    ``io_binding``: bind inputs/outputs explicitly (saves a copy for large tensors
    and is what makes device-resident buffers possible on the CUDA EP).
    ``graph_optimization``: ORT's own optimizer level; "all" for deployment,
    "disable" when the graph itself is being measured or compared.
    """

    providers: Sequence[str] = ("CPUExecutionProvider",)
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    graph_optimization: str = "all"
    io_binding: bool = False
    custom_op_libraries: Sequence[str] = ()
    enable_profiling: bool = False
    log_severity: int = 3

    def __post_init__(self) -> None:
        if self.graph_optimization not in _GRAPH_OPT:
            raise InvalidInputError(f"graph_optimization must be one of {sorted(_GRAPH_OPT)}, "
                                    f"got '{self.graph_optimization}'.")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise InvalidInputError("Thread counts must be >= 0 (0 = let ONNX Runtime choose).")


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX model (path, bytes or ModelProto) in ONNX Runtime.

    ``InferenceSession.run`` is thread-safe, so ``infer`` runs concurrently
    without a lock; with ``io_binding`` each thread gets its own binding.
    """

    backend = "onnxruntime"
    thread_safe = True

    def __init__(self, model: str | os.PathLike[str] | bytes | onnx.ModelProto,
                 options: OrtOptions | None = None, name: str | None = None) -> None:
        super().__init__(name or (Path(model).name if isinstance(model, (str, os.PathLike)) else None))
        self.model = model
        self.options = options or OrtOptions()
        self.session: Any = None
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []

    def _model_bytes_or_path(self) -> str | bytes:
        if isinstance(self.model, onnx.ModelProto):
            return self.model.SerializeToString()
        if isinstance(self.model, bytes):
            return self.model
        path = Path(self.model)
        if not path.exists():
            raise InvalidInputError(f"Model file '{path}' does not exist.")
        return str(path)

    def activate_impl(self) -> None:
        ort = require("onnxruntime", "the ONNX Runtime backend")
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.options.intra_op_threads
        so.inter_op_num_threads = self.options.inter_op_threads
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                              _GRAPH_OPT[self.options.graph_optimization])
        so.log_severity_level = self.options.log_severity
        so.enable_profiling = self.options.enable_profiling
        for lib in self.options.custom_op_libraries:
            so.register_custom_ops_library(str(lib))
        available = set(ort.get_available_providers())
        providers = [p for p in self.options.providers if p in available]
        if not providers:
            raise RunnerError(f"None of the providers {list(self.options.providers)} is available "
                              f"in this ONNX Runtime (available: {sorted(available)}).")
        try:
            self.session = ort.InferenceSession(self._model_bytes_or_path(), so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise RunnerError(f"ONNX Runtime could not load the model: {exc}") from exc
        self._inputs = [self._spec(i) for i in self.session.get_inputs()]
        self._outputs = [self._spec(o) for o in self.session.get_outputs()]
        log.debug("ORT session ready (%s) providers=%s", self.name, self.session.get_providers())

    @staticmethod
    def _spec(node_arg: Any) -> TensorSpec:
        ort_type = node_arg.type  # e.g. "tensor(float)"
        dtype = _ORT_TYPES.get(ort_type)
        if dtype is None:
            raise RunnerError(f"Unsupported ONNX Runtime type {ort_type} for '{node_arg.name}'.")
        shape = None if node_arg.shape is None else tuple(
            d if isinstance(d, int) else (d if isinstance(d, str) else None) for d in node_arg.shape)
        return TensorSpec(node_arg.name, shape, np.dtype(dtype))

    def deactivate_impl(self) -> None:
        self.session = None

    def input_specs_impl(self) -> list[TensorSpec]:
        return list(self._inputs)

    def output_specs_impl(self) -> list[TensorSpec]:
        return list(self._outputs)

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self._outputs]
        try:
            if self.options.io_binding:
                binding = self.session.io_binding()
                for name, arr in feed.items():
                    binding.bind_cpu_input(name, arr)
                for name in names:
                    binding.bind_output(name)
                self.session.run_with_iobinding(binding)
                values = binding.copy_outputs_to_cpu()
            else:
                values = self.session.run(names, feed)
        except Exception as exc:  # noqa: BLE001
            raise RunnerError(f"ONNX Runtime inference failed: {exc}") from exc
        return dict(zip(names, values))

    def describe(self) -> dict[str, Any]:
        ort = require("onnxruntime")
        info = super().describe()
        info.update({"onnxruntime": ort.__version__,
                     "providers": self.session.get_providers() if self.session else list(self.options.providers),
                     "intra_op_threads": self.options.intra_op_threads,
                     "inter_op_threads": self.options.inter_op_threads,
                     "io_binding": self.options.io_binding})
        return info


_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
    "tensor(uint16)": np.uint16, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
    "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
}


def run_onnx(model: str | os.PathLike[str] | bytes | onnx.ModelProto, feed: dict[str, np.ndarray],
             options: OrtOptions | None = None) -> dict[str, np.ndarray]:
    """One-shot helper: load, run once, release."""
    with OnnxRuntimeRunner(model, options) as runner:
        return runner.infer(feed)


__all__ = ["OrtOptions", "OnnxRuntimeRunner", "run_onnx", "graph_inputs", "graph_outputs"]
