"""TensorRT runner (pycuda), interchangeable with the ONNX Runtime runner.

* Engine loaded once; before deserializing, its sidecar is checked against this
  TensorRT version and GPU (``trt_edge.build.metadata.check_engine_compatible``),
  so a mismatch is refused with a clear message instead of TensorRT's
  deserialization error.
* Buffers planned once at the largest shape any profile allows
  (``trt_edge.runtime.cuda.plan_buffers``) and reused; page-locked host
  staging, or zero-copy mapped host memory on integrated GPUs (Jetson).
* Per thread: one execution context, one stream, its own buffers (contexts of
  one engine share the weights), so ``infer`` is thread safe without a lock.
* ``set_input_shape`` only when a shape changes; async H2D -> ``execute_async_v3``
  -> D2H on the thread's stream; optional CUDA-graph replay of the enqueue.
* Outputs whose shape depends on the data use an ``IOutputAllocator``.
* Coexists with PyTorch: the device's primary context is retained and pushed
  per call, never a private context and never ``pycuda.autoinit``.
* ``options.lean=True`` runs version-compatible engines with ``tensorrt_lean``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..errors import ArtifactError, EngineCompatibilityError, InvalidInputError, RunnerError
from ..onnx_io import TensorSpec
from .base import Runner
from .cuda import (BufferPlan, CudaContext, CudaGraph, DeviceBuffer, Event, HostBuffer, Stream,
                   TensorBinding, max_shape, memcpy_dtoh_async, memcpy_htod_async, plan_buffers, volume)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnx
    import tensorrt

    from ..build.options import BuildOptions

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrtRunnerOptions:
    """How the TensorRT runner runs.

    device: CUDA device index.
    profile: optimization profile every execution context uses.
    cuda_graph: capture the enqueue into a CUDA graph and replay it while
        input shapes stay the same (re-captured when they change).
    zero_copy: use mapped host memory instead of device buffers + copies;
        None = automatically on integrated GPUs (Jetson), off elsewhere.
    lean: load the engine with the lean runtime (``tensorrt_lean``); only
        version-compatible engines.
    trust_host_code: allow a version-compatible plan's embedded lean runtime
        (host code inside the plan) to run; only for plans you trust.
    check_compatibility: refuse engines whose sidecar names another TensorRT/GPU.
    """

    device: int = 0
    profile: int = 0
    cuda_graph: bool = False
    zero_copy: bool | None = None
    lean: bool = False
    trust_host_code: bool = False
    check_compatibility: bool = True


def dims_tuple(dims: Any) -> tuple[int, ...]:
    """``trt.Dims`` (indexable, no ``__iter__`` in the stubs) or a sequence -> tuple of ints."""
    return tuple(int(dims[i]) for i in range(len(dims)))


def _load_trt(lean: bool) -> Any:
    from ..build.versions import load_tensorrt

    return load_tensorrt("running TensorRT engines", lean=lean)


class _LogCapture:
    """Collects TensorRT log lines so a failed deserialization can show them."""

    def __init__(self, trt: Any) -> None:
        lines: list[str] = []
        self.lines = lines

        class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                lines.append(msg)
                if int(severity) <= 1:
                    log.error("TensorRT: %s", msg)
                elif int(severity) == 2:
                    log.warning("TensorRT: %s", msg)

        self.logger = _Logger()


def _make_output_allocator(trt: Any) -> Any:
    """An IOutputAllocator for outputs whose shape is only known after the run."""

    class _OutputAllocator(trt.IOutputAllocator):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)
            self.buffer: DeviceBuffer | None = None
            self.shape: tuple[int, ...] | None = None

        def reallocate_output(self, tensor_name: str, memory: int, size: int, alignment: int) -> int:
            return self.reallocate_output_async(tensor_name, memory, size, alignment, None)

        def reallocate_output_async(self, tensor_name: str, memory: int, size: int, alignment: int,
                                    stream: Any) -> int:
            size = max(int(size), 1)
            if self.buffer is None or self.buffer.nbytes < size:
                if self.buffer is not None:
                    self.buffer.close()
                self.buffer = DeviceBuffer(size)
            return self.buffer.ptr

        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            self.shape = tuple(int(d) for d in shape)

        def close(self) -> None:
            if self.buffer is not None:
                self.buffer.close()
                self.buffer = None

    return _OutputAllocator()


class _ThreadState:
    """One thread's execution context, stream, buffers, events and CUDA graph."""

    def __init__(self, runner: "TensorRTRunner") -> None:
        self.runner = runner
        engine: tensorrt.ICudaEngine = runner._engine
        self.stream = Stream()
        context = engine.create_execution_context()
        if context is None:
            raise RunnerError("TensorRT could not create an execution context (out of GPU memory?).")
        self.context: tensorrt.IExecutionContext = context
        if runner.options.profile:
            self.context.set_optimization_profile_async(runner.options.profile, self.stream.handle)
        plan: BufferPlan = runner._plan
        zero_copy = runner._zero_copy
        self.device: dict[str, DeviceBuffer] = {}
        self.host: dict[str, HostBuffer] = {}
        self.allocators: dict[str, Any] = {}
        for name, binding in plan.bindings.items():
            if binding.data_dependent:
                alloc = _make_output_allocator(runner._trt)
                self.allocators[name] = alloc
                self.context.set_output_allocator(name, alloc)
                continue
            nbytes = plan.nbytes[name]
            self.host[name] = HostBuffer(nbytes, mapped=zero_copy)
            if zero_copy:
                self.context.set_tensor_address(name, self.host[name].device_ptr)
            else:
                self.device[name] = DeviceBuffer(nbytes)
                self.context.set_tensor_address(name, self.device[name].ptr)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.graph: CudaGraph | None = None
        self.events = [Event() for _ in range(4)]

    # ---- one inference ----------------------------------------------------------------------
    def set_shapes(self, feed: Mapping[str, np.ndarray]) -> bool:
        """``set_input_shape`` for inputs whose shape changed; True if any did."""
        changed = False
        for name in self.runner._input_names:
            shape = tuple(feed[name].shape)
            if self.shapes.get(name) != shape:
                self.runner._plan.check_fits(name, shape)
                if not self.context.set_input_shape(name, shape):
                    raise InvalidInputError(
                        f"TensorRT rejected shape {shape} for input '{name}': it is outside optimization "
                        f"profile {self.runner.options.profile} ({self.runner.profile_ranges().get(name)}).")
                self.shapes[name] = shape
                changed = True
        if changed and self.graph is not None:
            self.graph.close()  # captured for other shapes
            self.graph = None
        return changed

    def stage_inputs(self, feed: Mapping[str, np.ndarray]) -> None:
        for name in self.runner._input_names:
            arr = feed[name]
            self.host[name].view(arr.dtype, arr.shape)[...] = arr

    def copy_inputs(self) -> None:
        if self.runner._zero_copy:
            return
        for name in self.runner._input_names:
            shape = self.shapes[name]
            dtype = self.runner._plan.bindings[name].dtype
            memcpy_htod_async(self.device[name].ptr, self.host[name].view(dtype, shape), self.stream)

    def enqueue(self) -> None:
        use_graph = self.runner.options.cuda_graph and not self.allocators
        if use_graph and self.graph is None:
            # TensorRT defers some work to the first enqueue after a shape change:
            # run once outside capture, then capture the steady-state enqueue.
            self._execute()
            self.stream.synchronize()
            self.graph = CudaGraph.capture(self.stream, self._execute)
        if use_graph and self.graph is not None:
            self.graph.launch(self.stream)
        else:
            self._execute()

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.handle):
            raise RunnerError("execute_async_v3 failed: see the TensorRT log above.")

    def output_shape(self, name: str) -> tuple[int, ...]:
        if name in self.allocators:
            shape = self.allocators[name].shape
            if shape is None:
                raise RunnerError(f"TensorRT did not report the shape of output '{name}'.")
            return tuple(shape)
        return dims_tuple(self.context.get_tensor_shape(name))

    def copy_outputs(self) -> dict[str, np.ndarray]:
        """Enqueue D2H for every output; returns host views valid after synchronize."""
        views: dict[str, np.ndarray] = {}
        for name in self.runner._output_names:
            dtype = self.runner._plan.bindings[name].dtype
            shape = self.output_shape(name)
            if name in self.allocators:
                # Data-dependent: the host staging buffer is sized on demand.
                need = volume(shape) * dtype.itemsize
                host = self.host.get(name)
                if host is None or host.nbytes < need:
                    if host is not None:
                        host.close()
                    host = self.host[name] = HostBuffer(need)
                view = host.view(dtype, shape)
                buf = self.allocators[name].buffer
                if buf is not None and need:
                    memcpy_dtoh_async(view, buf.ptr, self.stream)
            else:
                view = self.host[name].view(dtype, shape)
                if not self.runner._zero_copy:
                    memcpy_dtoh_async(view, self.device[name].ptr, self.stream)
            views[name] = view
        return views

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.set_shapes(feed)
        self.stage_inputs(feed)
        self.copy_inputs()
        self.enqueue()
        if self.allocators:
            # Data-dependent shapes are known only once the enqueue has run.
            self.stream.synchronize()
        views = self.copy_outputs()
        self.stream.synchronize()
        return {name: np.array(v, copy=True) for name, v in views.items()}

    def timed_iteration(self, transfers: bool) -> tuple[float, float, float, float]:
        """(h2d_ms, compute_ms, d2h_ms, enqueue_ms) of one query from CUDA events."""
        e0, e1, e2, e3 = self.events
        e0.record(self.stream)
        if transfers:
            self.copy_inputs()
        e1.record(self.stream)
        t0 = time.perf_counter()
        self.enqueue()
        enqueue_ms = (time.perf_counter() - t0) * 1e3
        e2.record(self.stream)
        if transfers:
            if self.allocators:
                self.stream.synchronize()
            self.copy_outputs()
        e3.record(self.stream)
        e3.synchronize()
        return (e1.elapsed_ms_since(e0), e2.elapsed_ms_since(e1), e3.elapsed_ms_since(e2), enqueue_ms)

    def close(self) -> None:
        if self.graph is not None:
            self.graph.close()
            self.graph = None
        for alloc in self.allocators.values():
            alloc.close()
        for buf in list(self.device.values()) + list(self.host.values()):
            buf.close()
        self.device.clear()
        self.host.clear()
        for ev in self.events:
            ev.close()
        self.stream.close()
        del self.context


class TensorRTRunner(Runner):
    """Runs a serialized TensorRT engine (.plan) with pycuda buffers and streams."""

    backend = "tensorrt"
    thread_safe = True  # every thread gets its own execution context and stream

    def __init__(self, engine: str | os.PathLike[str] | bytes, options: TrtRunnerOptions | None = None,
                 name: str | None = None) -> None:
        super().__init__(name or (Path(engine).name if not isinstance(engine, bytes) else "engine"))
        self.engine_source = engine
        self.options = options or TrtRunnerOptions()
        self._states: dict[int, _ThreadState] = {}
        self._states_lock = threading.Lock()
        self._ctx: CudaContext | None = None
        self.compatibility_warnings: list[str] = []

    @classmethod
    def from_onnx(cls, model: "str | os.PathLike[str] | bytes | onnx.ModelProto",
                  options: TrtRunnerOptions | None = None,
                  build_options: "BuildOptions | None" = None,
                  engine_dir: str | os.PathLike[str] | None = None) -> "TensorRTRunner":
        """Build ``model`` into an engine (cached by model hash and options) and open it."""
        import hashlib
        import json

        import onnx

        from ..artifacts import model_hash, save_onnx, to_jsonable
        from ..build.builder import build_engine
        from ..build.options import BuildOptions

        bopts = build_options or BuildOptions()
        folder = Path(engine_dir) if engine_dir else Path(tempfile.gettempdir()) / "trt_edge_engines"
        if isinstance(model, (bytes, onnx.ModelProto)):
            proto = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(model)
            src = folder / f"model-{model_hash(proto)[:16]}.onnx"
            if not src.exists():
                save_onnx(proto, src)
            model = src
        opts_hash = hashlib.sha256(json.dumps(to_jsonable(bopts), sort_keys=True).encode()).hexdigest()
        key = f"{model_hash(model)[:16]}-{bopts.precision}-{opts_hash[:8]}"
        plan = folder / f"{Path(model).stem}-{key}.plan"
        if not plan.exists():
            build_engine(model, plan, bopts)
        return cls(plan, options)

    # ---- life cycle -------------------------------------------------------------------------
    def _engine_bytes(self) -> bytes:
        if isinstance(self.engine_source, bytes):
            return self.engine_source
        path = Path(self.engine_source)
        if not path.exists():
            raise ArtifactError(f"Engine '{path}' does not exist. Build it with `trt-edge build`.")
        return path.read_bytes()

    def _check_sidecar(self, version_text: str) -> None:
        if isinstance(self.engine_source, bytes) or not self.options.check_compatibility:
            return
        from ..artifacts import sidecar_path
        from ..build.metadata import check_engine_compatible, query_gpu, read_engine_metadata
        from ..build.versions import parse_version

        if not sidecar_path(self.engine_source).exists():
            log.warning("engine %s has no sidecar: cannot check its TensorRT version and GPU before "
                        "deserializing", self.engine_source)
            return
        meta = read_engine_metadata(self.engine_source)
        self.compatibility_warnings = check_engine_compatible(
            meta, parse_version(version_text), query_gpu(self.options.device), lean=self.options.lean)

    def activate_impl(self) -> None:
        trt = _load_trt(self.options.lean)
        self._trt = trt
        self._check_sidecar(trt.__version__)
        self._ctx = CudaContext(self.options.device)
        try:
            with self._ctx:
                self._load_engine(trt)
        except BaseException:
            # activate failed: the base class will not call deactivate, so release here.
            self._ctx.close()
            self._ctx = None
            raise

    def _load_engine(self, trt: Any) -> None:
        assert self._ctx is not None
        self._capture = _LogCapture(trt)
        runtime: tensorrt.Runtime = trt.Runtime(self._capture.logger)
        if self.options.trust_host_code:
            runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(self._engine_bytes())
        if engine is None:
            tail = "\n  ".join(self._capture.lines[-5:]) or "(no TensorRT message)"
            raise EngineCompatibilityError(
                f"TensorRT {trt.__version__} could not deserialize '{self.name}':\n  {tail}\n"
                "The engine was probably built with another TensorRT version or for another GPU "
                "(or it is version-compatible and needs trust_host_code=True): rebuild it here "
                "with `trt-edge build`.")
        self._runtime = runtime
        self._engine: tensorrt.ICudaEngine = engine
        if self.options.profile >= engine.num_optimization_profiles:
            raise InvalidInputError(f"Profile {self.options.profile} requested but the engine has "
                                    f"{engine.num_optimization_profiles} profile(s).")
        self._describe_io()
        self._zero_copy = (self._ctx.integrated if self.options.zero_copy is None
                           else bool(self.options.zero_copy))
        if self._zero_copy and not self._ctx.can_map_host_memory:
            raise RunnerError("zero_copy requested but this GPU cannot map host memory.")

    def _describe_io(self) -> None:
        trt = self._trt
        engine = self._engine
        self._input_names: list[str] = []
        self._output_names: list[str] = []
        dtypes: dict[str, np.dtype] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self._input_names if is_input else self._output_names).append(name)
            dtypes[name] = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shapes[name] = dims_tuple(engine.get_tensor_shape(name))
        self._engine_shapes = shapes
        # Largest input shapes over the profile this runner uses; outputs: ask a
        # scratch context for their shapes at those maxima (-1 left = data dependent).
        max_in: dict[str, tuple[int, ...]] = {}
        for name in self._input_names:
            if any(d < 0 for d in shapes[name]):
                prof = engine.get_tensor_profile_shape(name, self.options.profile)
                max_in[name] = dims_tuple(prof[2])
            else:
                max_in[name] = shapes[name]
        max_out: dict[str, tuple[int, ...] | None] = {}
        if any(any(d < 0 for d in shapes[n]) for n in self._output_names):
            scratch = engine.create_execution_context()
            stream = Stream()
            try:
                if self.options.profile:
                    scratch.set_optimization_profile_async(self.options.profile, stream.handle)
                    stream.synchronize()
                for name, shape in max_in.items():
                    scratch.set_input_shape(name, shape)
                for name in self._output_names:
                    s = dims_tuple(scratch.get_tensor_shape(name))
                    max_out[name] = None if any(d < 0 for d in s) else max_shape([s])
            finally:
                stream.close()
                del scratch
        else:
            max_out = {n: shapes[n] for n in self._output_names}
        bindings = [TensorBinding(n, dtypes[n], True, max_in[n]) for n in self._input_names]
        bindings += [TensorBinding(n, dtypes[n], False, max_out[n]) for n in self._output_names]
        self._plan = plan_buffers(bindings)
        log.info("planned %.1f MB of I/O buffers per thread (%s)", self._plan.total_device_bytes / 1e6,
                 ", ".join(f"{n}={s}" for n, s in {**max_in, **max_out}.items()))

    def _state(self) -> _ThreadState:
        tid = threading.get_ident()
        state = self._states.get(tid)
        if state is None:
            state = _ThreadState(self)
            with self._states_lock:
                self._states[tid] = state
        return state

    def deactivate_impl(self) -> None:
        if self._ctx is None:
            return
        with self._ctx:
            with self._states_lock:
                states, self._states = list(self._states.values()), {}
            for state in states:
                state.close()
            for attr in ("_engine", "_runtime"):
                if hasattr(self, attr):
                    delattr(self, attr)
        self._ctx.close()
        self._ctx = None

    # ---- Runner interface ---------------------------------------------------------------------
    def _spec(self, name: str) -> TensorSpec:
        dims = tuple(d if d >= 0 else None for d in self._engine_shapes[name])
        return TensorSpec(name, dims, self._plan.bindings[name].dtype)

    def input_specs_impl(self) -> list[TensorSpec]:
        return [self._spec(n) for n in self._input_names]

    def output_specs_impl(self) -> list[TensorSpec]:
        return [self._spec(n) for n in self._output_names]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._ctx is not None
        with self._ctx:
            return self._state().infer(feed)

    def profile_ranges(self) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Input name -> (min, opt, max) of the runner's optimization profile."""
        out = {}
        for name in self._input_names:
            prof = self._engine.get_tensor_profile_shape(name, self.options.profile)
            out[name] = tuple(dims_tuple(s) for s in prof)
        return out

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"tensorrt": getattr(getattr(self, "_trt", None), "__version__", None),
                  "device": self.options.device, "cuda_graph": self.options.cuda_graph,
                  "zero_copy": getattr(self, "_zero_copy", None), "lean": self.options.lean,
                  "profile": self.options.profile})
        if self._ctx is not None:
            d["gpu"] = self._ctx.device.name()
        return d

    # ---- GPU timing -----------------------------------------------------------------------------
    def benchmark_gpu(self, feed: Mapping[str, np.ndarray], warmup: int = 10,
                      iterations: int | None = 200, duration_s: float | None = None,
                      cuda_graph: bool | None = None, transfers: bool = True,
                      jetson_power: bool = True, variants: bool = True) -> dict[str, Any]:
        """trtexec-style H2D / compute / D2H / enqueue / end-to-end statistics (ms) and throughput.

        Runs on the calling thread's context and stream; ``cuda_graph`` overrides
        the runner option for this measurement. On a Jetson (``tegrastats``
        present) and with ``jetson_power``, the power mode is recorded and
        tegrastats is sampled during the timed run (power, energy, RAM, GPU load)
        under the ``jetson`` key. With ``variants``, the other two trtexec
        configurations are measured too (CUDA graph on/off, and GPU compute
        without transfers) and summarised under ``variants``, so one
        ``trt-edge bench`` shows what graphs and copies cost.
        """
        import contextlib

        from ..bench.tegrastats import TegrastatsSampler, power_mode, tegrastats_available
        from ..bench.trt_timing import GpuTimingOptions, IterationTiming, run_timing_loop

        self._check_active()
        feed = self.validate_inputs(feed)
        opts = GpuTimingOptions(warmup=warmup, iterations=iterations, duration_s=duration_s,
                                cuda_graph=self.options.cuda_graph if cuda_graph is None else cuda_graph,
                                transfers=transfers)
        assert self._ctx is not None
        sampler: TegrastatsSampler | None = None
        saved = self.options.cuda_graph
        self.options.cuda_graph = opts.cuda_graph
        try:
            with self._ctx:
                state = self._state()
                state.set_shapes(feed)
                state.stage_inputs(feed)

                def step(timed: bool) -> IterationTiming:
                    return IterationTiming(*state.timed_iteration(opts.transfers))

                batch = int(next(iter(feed.values())).shape[0]) if feed else 1
                if jetson_power and tegrastats_available():
                    sampler = TegrastatsSampler(100)
                with sampler if sampler is not None else contextlib.nullcontext():
                    report = run_timing_loop(step, opts, batch=batch)
        finally:
            self.options.cuda_graph = saved
        report["zero_copy"] = self._zero_copy
        if sampler is not None:
            report["jetson"] = {"power_mode": power_mode(), **sampler.summary()}
        if variants:
            report["variants"] = self._variants(feed, opts)
        return report

    def _variants(self, feed: Mapping[str, np.ndarray], main: Any) -> dict[str, Any]:
        """Short summaries of the graph-on/off and no-transfer configurations not measured above."""
        has_dds = bool(self._plan.data_dependent_outputs)
        wanted = {"cuda_graph_off": (False, True), "cuda_graph_on": (True, True),
                  "no_transfers": (not has_dds, False)}
        out: dict[str, Any] = {}
        for key, (graph, transfers) in wanted.items():
            if (graph, transfers) == (main.cuda_graph, main.transfers) or (graph and has_dds):
                continue
            r = self.benchmark_gpu(feed, warmup=main.warmup, iterations=main.iterations,
                                   duration_s=main.duration_s, cuda_graph=graph, transfers=transfers,
                                   jetson_power=False, variants=False)
            out[key] = {"cuda_graph": graph, "transfers": transfers,
                        "end_to_end_median_ms": r["end_to_end_ms"]["median"],
                        "end_to_end_p99_ms": r["end_to_end_ms"]["p99"],
                        "compute_median_ms": r["compute_ms"]["median"],
                        "enqueue_median_ms": r["enqueue_ms"]["median"],
                        "throughput_qps": r["throughput_qps"]}
        return out


__all__ = ["TensorRTRunner", "TrtRunnerOptions"]
