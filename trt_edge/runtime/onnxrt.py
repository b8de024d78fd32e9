"""ONNX Runtime runner: the embedded default backend (CPU here, CUDA EP where present)."""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from .._lazy import require
from ..errors import InvalidInputError, RunnerError
from ..onnx_io import TensorSpec, graph_inputs, graph_outputs
from .base import Runner

log = logging.getLogger(__name__)

_GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


# Providers that compute in host memory: IO binding only adds Python work there.
_HOST_PROVIDERS = frozenset({"CPUExecutionProvider", "AzureExecutionProvider", "XnnpackExecutionProvider"})
_EXECUTION_MODE = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}


@dataclasses.dataclass
class OrtOptions:
    """Options for :class:`OnnxRuntimeRunner`.

    ``intra_op_threads``: threads one operator may use (0 lets ONNX Runtime choose:
    one per physical core). When several threads call ``infer`` at once (the batch
    and async APIs), set it to 1 or 2 so the callers do not oversubscribe the cores.
    ``inter_op_threads``: threads running independent operators at once; only used
    with ``execution_mode="parallel"`` (ORT ignores it in sequential mode).
    ``allow_spinning``: ORT's intra-op workers busy-wait between operators (lower
    latency for one caller, wasted cores when many callers share the machine);
    None keeps ORT's default (spinning on).
    ``io_binding``: bind inputs/outputs explicitly. Outputs whose shapes follow
    from the input shapes are written straight into arrays returned to the caller;
    on a device EP (CUDA, TensorRT, ROCm, DirectML) that is one device-to-host copy
    instead of two. None (the default) means "where it helps": on for a session
    whose first provider is a device EP, off on the CPU EP, where it measured
    slower than the plain path (docs/benchmarks/runtime.md).
    ``graph_optimization``: ORT's own optimizer level; "all" for deployment,
    "disable" when the graph itself is being measured or compared.
    ``session_config``: extra ``SessionOptions.add_session_config_entry`` keys for
    settings without a field here (documented by ORT as string key/values).
    ``provider_options``: one dict per entry of ``providers`` (e.g. CUDA device_id).
    """

    providers: Sequence[str] = ("CPUExecutionProvider",)
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    graph_optimization: str = "all"
    io_binding: bool | None = None
    custom_op_libraries: Sequence[str] = ()
    enable_profiling: bool = False
    log_severity: int = 3
    execution_mode: str = "sequential"
    allow_spinning: bool | None = None
    session_config: Mapping[str, str] = dataclasses.field(default_factory=dict)
    provider_options: Sequence[Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.providers, str):
            self.providers = (self.providers,)
        if self.graph_optimization not in _GRAPH_OPT:
            raise InvalidInputError(f"graph_optimization must be one of {sorted(_GRAPH_OPT)}, "
                                    f"got '{self.graph_optimization}'.")
        if self.execution_mode not in _EXECUTION_MODE:
            raise InvalidInputError(f"execution_mode must be one of {sorted(_EXECUTION_MODE)}, "
                                    f"got '{self.execution_mode}'.")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise InvalidInputError("Thread counts must be >= 0 (0 = let ONNX Runtime choose).")
        if not 0 <= self.log_severity <= 4:
            raise InvalidInputError(f"log_severity must be 0 (verbose) .. 4 (fatal), got {self.log_severity}.")
        if self.provider_options is not None and len(self.provider_options) != len(self.providers):
            raise InvalidInputError(
                f"provider_options has {len(self.provider_options)} entries but providers has "
                f"{len(self.providers)}: give one dict per provider (an empty dict for defaults).")
        if self.inter_op_threads > 1 and self.execution_mode != "parallel":
            log.warning("inter_op_threads=%d has no effect with execution_mode='sequential'; "
                        "set execution_mode='parallel' to use it.", self.inter_op_threads)


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX model (path, bytes or ModelProto) in ONNX Runtime.

    ``InferenceSession.run`` is thread-safe, so ``infer`` runs concurrently
    without a lock (the batch and async APIs of :class:`Runner` rely on it);
    with ``io_binding`` each call makes its own binding, so threads never share one.
    """

    backend = "onnxruntime"
    thread_safe = True

    def __init__(self, model: str | os.PathLike[str] | bytes | onnx.ModelProto,
                 options: OrtOptions | None = None, name: str | None = None) -> None:
        super().__init__(name or (Path(model).name if isinstance(model, (str, os.PathLike)) else None))
        self.model = model
        self.options = options or OrtOptions()
        self.session: Any = None
        self.profile_path: str | None = None
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        # Set when ORT rejected an output preallocated from the declared shapes (a model
        # whose declared output shape is wrong): later calls let ORT allocate instead.
        self._prealloc_broken = False
        self._use_binding = False
        self._names: list[str] = []

    @property
    def uses_io_binding(self) -> bool:
        """Whether ``infer`` uses IO binding (resolved from ``options.io_binding`` on activation)."""
        return self._use_binding

    def _model_bytes_or_path(self) -> str | bytes:
        if isinstance(self.model, onnx.ModelProto):
            return self.model.SerializeToString()
        if isinstance(self.model, bytes):
            return self.model
        path = Path(self.model)
        if not path.exists():
            raise InvalidInputError(f"Model file '{path}' does not exist.")
        if path.is_dir():
            raise InvalidInputError(f"'{path}' is a directory; give the path of an .onnx file.")
        return str(path)

    def _session_options(self, ort: Any) -> Any:
        opts = self.options
        so = ort.SessionOptions()
        so.intra_op_num_threads = opts.intra_op_threads
        so.inter_op_num_threads = opts.inter_op_threads
        so.execution_mode = getattr(ort.ExecutionMode, _EXECUTION_MODE[opts.execution_mode])
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _GRAPH_OPT[opts.graph_optimization])
        so.log_severity_level = opts.log_severity
        so.enable_profiling = opts.enable_profiling
        if opts.enable_profiling:
            so.profile_file_prefix = f"ort_profile_{self.name}"
        if opts.allow_spinning is not None:
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if opts.allow_spinning else "0")
        for key, value in opts.session_config.items():
            so.add_session_config_entry(str(key), str(value))
        for lib in opts.custom_op_libraries:
            if not Path(lib).exists():
                raise InvalidInputError(f"Custom-op library '{lib}' does not exist; build it or fix the path.")
            so.register_custom_ops_library(str(lib))
        return so

    def activate_impl(self) -> None:
        ort = require("onnxruntime", "the ONNX Runtime backend")
        so = self._session_options(ort)
        available = set(ort.get_available_providers())
        wanted = list(self.options.providers)
        chosen = [i for i, p in enumerate(wanted) if p in available]
        if not chosen:
            raise RunnerError(f"None of the providers {wanted} is available in this ONNX Runtime "
                              f"(available: {sorted(available)}). Install the matching onnxruntime "
                              "package (e.g. onnxruntime-gpu for CUDAExecutionProvider) or use "
                              "CPUExecutionProvider.")
        dropped = [p for p in wanted if p not in available]
        if dropped:
            log.warning("%s: providers %s are not available in this ONNX Runtime; running with %s.",
                        self.name, dropped, [wanted[i] for i in chosen])
        providers = [wanted[i] for i in chosen]
        provider_options = None
        if self.options.provider_options is not None:
            provider_options = [dict(self.options.provider_options[i]) for i in chosen]
        try:
            self.session = ort.InferenceSession(self._model_bytes_or_path(), so, providers=providers,
                                                provider_options=provider_options)
        except InvalidInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise RunnerError(f"ONNX Runtime could not load the model '{self.name}': {exc}. Check the "
                              "model with `trt-edge inspect` and onnx.checker.") from exc
        self._inputs = [self._spec(i) for i in self.session.get_inputs()]
        self._outputs = [self._spec(o) for o in self.session.get_outputs()]
        self._names = [o.name for o in self._outputs]  # reused by every call
        self._prealloc_broken = False
        active = self.session.get_providers()
        self._use_binding = (bool(active) and active[0] not in _HOST_PROVIDERS) \
            if self.options.io_binding is None else bool(self.options.io_binding)
        log.debug("ORT session ready (%s) providers=%s", self.name, self.session.get_providers())

    @staticmethod
    def _spec(node_arg: Any) -> TensorSpec:
        ort_type = node_arg.type  # e.g. "tensor(float)"
        dtype = _ORT_TYPES.get(ort_type)
        if dtype is None:
            raise RunnerError(f"Unsupported ONNX Runtime type {ort_type} for '{node_arg.name}': trt_edge "
                              "runners take numeric tensors only.")
        shape = None if node_arg.shape is None else tuple(
            d if isinstance(d, int) else (d if isinstance(d, str) else None) for d in node_arg.shape)
        return TensorSpec(node_arg.name, shape, np.dtype(dtype))

    def deactivate_impl(self) -> None:
        session, self.session = self.session, None
        if session is not None and self.options.enable_profiling:
            try:
                self.profile_path = session.end_profiling()
                log.info("%s: ONNX Runtime profile written to %s", self.name, self.profile_path)
            except Exception as exc:  # noqa: BLE001 - profiling must not break shutdown
                log.warning("%s: could not end ORT profiling: %s", self.name, exc)

    def input_specs_impl(self) -> list[TensorSpec]:
        return list(self._inputs)

    def output_specs_impl(self) -> list[TensorSpec]:
        return list(self._outputs)

    def output_shapes_for(self, feed: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
        """Output shapes that follow from the input shapes alone.

        A declared output dim is known if it is fixed or if its ``dim_param`` also
        names an input dim (ONNX: the same name means the same size in one graph).
        Outputs with any other dim (data-dependent sizes) are left out.
        """
        sizes: dict[str, int] = {}
        for spec in self._inputs:
            if spec.shape is None or spec.name not in feed:
                continue
            for want, got in zip(spec.shape, feed[spec.name].shape):
                if isinstance(want, str) and want:
                    sizes[want] = int(got)
        shapes: dict[str, tuple[int, ...]] = {}
        for spec in self._outputs:
            if spec.shape is None:
                continue
            dims = [d if isinstance(d, int) and d >= 0 else sizes.get(d) if isinstance(d, str) else None
                    for d in spec.shape]
            if all(d is not None for d in dims):
                shapes[spec.name] = tuple(int(d) for d in dims)  # type: ignore[arg-type]
        return shapes

    def _run_bound(self, feed: dict[str, np.ndarray], prealloc: bool) -> dict[str, np.ndarray]:
        binding = self.session.io_binding()
        for name, arr in feed.items():
            binding.bind_cpu_input(name, arr)
        shapes = self.output_shapes_for(feed) if prealloc else {}
        outputs: dict[str, np.ndarray] = {}
        for spec in self._outputs:
            shape = shapes.get(spec.name)
            if shape is not None:
                # ORT writes into this array directly: the caller gets it without a copy.
                arr = np.empty(shape, dtype=spec.dtype)
                binding.bind_output(spec.name, "cpu", 0, arr.dtype, arr.shape, arr.ctypes.data)
                outputs[spec.name] = arr
            else:
                binding.bind_output(spec.name)
        self.session.run_with_iobinding(binding)
        if len(outputs) < len(self._outputs):
            for spec, value in zip(self._outputs, binding.get_outputs()):
                if spec.name not in outputs:
                    outputs[spec.name] = value.numpy()  # keeps the OrtValue alive, no extra copy
        return {s.name: outputs[s.name] for s in self._outputs}

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.session
        if session is None:
            raise RunnerError(f"Runner '{self.name}' was deactivated while an inference was starting.")
        names = self._names
        try:
            if self._use_binding:
                try:
                    return self._run_bound(feed, prealloc=not self._prealloc_broken)
                except Exception as exc:  # noqa: BLE001
                    if self._prealloc_broken or "pre-allocated" not in str(exc):
                        raise
                    log.warning("%s: an output's declared shape does not match what the model "
                                "computes; letting ONNX Runtime allocate outputs from now on (%s)",
                                self.name, str(exc).splitlines()[0][:200])
                    self._prealloc_broken = True
                    return self._run_bound(feed, prealloc=False)
            values = session.run(names, feed)
        except Exception as exc:  # noqa: BLE001
            raise RunnerError(f"ONNX Runtime inference failed in '{self.name}': {exc}") from exc
        return dict(zip(names, values))

    def describe(self) -> dict[str, Any]:
        ort = require("onnxruntime")
        info = super().describe()
        info.update({"onnxruntime": ort.__version__,
                     "providers": self.session.get_providers() if self.session else list(self.options.providers),
                     "intra_op_threads": self.options.intra_op_threads,
                     "inter_op_threads": self.options.inter_op_threads,
                     "execution_mode": self.options.execution_mode,
                     "graph_optimization": self.options.graph_optimization,
                     "allow_spinning": self.options.allow_spinning,
                     "io_binding": self._use_binding if self.session else self.options.io_binding})
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
