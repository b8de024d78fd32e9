"""TensorRT runner (pycuda), interchangeable with the ONNX Runtime runner.

What it does, and only that: load an engine and run it.

* Before deserializing, the engine's sidecar is checked against this TensorRT
  version and GPU (``trt_edge.build.metadata.check_engine_compatible``), so a
  mismatch is refused with a clear message instead of TensorRT's
  deserialization error.
* I/O buffers are planned once at the largest shape the profile allows
  (``trt_edge.runtime.cuda_plan``).
* Execution instances (context + stream + buffers, ``runtime.trt_instance``)
  are made by :meth:`TensorRTRunner.create_instances` for a model's pool, and
  for the plain ``Runner.infer`` API the runner keeps its own small pool of
  ``options.instances`` of them (made on first use). Nothing is per thread:
  concurrent callers beyond the instance count wait for a free one.
* Coexists with PyTorch: the device's primary context is retained and pushed
  per call, never a private context and never ``pycuda.autoinit``.
* ``options.lean=True`` runs version-compatible engines with ``tensorrt_lean``.

Building engines lives in ``trt_edge.build`` (``build.engine_cache`` for
"build this ONNX once and reuse it"), GPU timing and tegrastats in
``trt_edge.bench.trt_timing`` through the :meth:`timed_iterations` hook.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import numpy as np

from ..build.cuda import CudaContext
from ..errors import ArtifactError, EngineCompatibilityError, InvalidInputError, RunnerError
from ..onnx_io import TensorSpec
from .base import Runner
from .cuda import Stream
from .cuda_plan import TensorBinding, max_shape, plan_buffers
from .pool import InstancePool
from .timing import IterationTimes
from .trt_instance import EngineIO, TrtExecInstance, dims_tuple

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
    instances: execution instances behind the plain ``Runner.infer`` API (made on
        first use); concurrent callers beyond this wait. ``Model.load(instances=N)``
        makes its own N instead.
    """

    device: int = 0
    profile: int = 0
    cuda_graph: bool = False
    zero_copy: bool | None = None
    lean: bool = False
    trust_host_code: bool = False
    check_compatibility: bool = True
    instances: int = 1

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise InvalidInputError(f"instances must be >= 1, got {self.instances}.")
        if self.profile < 0 or self.device < 0:
            raise InvalidInputError("device and profile must be >= 0.")


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


class TensorRTRunner(Runner):
    """Runs a serialized TensorRT engine (.plan) with pycuda buffers and streams."""

    backend = "tensorrt"
    thread_safe = True  # every call borrows its own execution instance

    def __init__(self, engine: str | os.PathLike[str] | bytes, options: TrtRunnerOptions | None = None,
                 name: str | None = None) -> None:
        super().__init__(name or (Path(engine).name if not isinstance(engine, bytes) else "engine"))
        self.engine_source = engine
        self.options = options or TrtRunnerOptions()
        self._ctx: CudaContext | None = None
        self._instances: list[TrtExecInstance] = []   # every instance made, to free at deactivate
        self._instances_lock = threading.Lock()
        self._own_pool: InstancePool[TrtExecInstance] | None = None
        self.compatibility_warnings: list[str] = []

    @classmethod
    def from_onnx(cls, model: "str | os.PathLike[str] | bytes | onnx.ModelProto",
                  options: TrtRunnerOptions | None = None,
                  build_options: "BuildOptions | None" = None,
                  engine_dir: str | os.PathLike[str] | None = None) -> "TensorRTRunner":
        """Compatibility shim: ``trt_edge.build.engine_cache.cached_engine`` then open the plan."""
        from ..build.engine_cache import cached_engine

        return cls(cached_engine(model, build_options, engine_dir), options)

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
        zero_copy = (self._ctx.integrated if self.options.zero_copy is None else bool(self.options.zero_copy))
        if zero_copy and not self._ctx.can_map_host_memory:
            raise RunnerError("zero_copy requested but this GPU cannot map host memory.")
        self._io = self._describe_io(zero_copy)

    def _describe_io(self, zero_copy: bool) -> EngineIO:
        trt = self._trt
        engine = self._engine
        inputs: list[str] = []
        outputs: list[str] = []
        dtypes: dict[str, np.dtype] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(name)
            dtypes[name] = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shapes[name] = dims_tuple(engine.get_tensor_shape(name))
        self._engine_shapes = shapes
        self._dtypes = dtypes
        ranges: dict[str, tuple[tuple[int, ...], ...]] = {}
        for name in inputs:
            prof = engine.get_tensor_profile_shape(name, self.options.profile)
            ranges[name] = tuple(dims_tuple(s) for s in prof) if any(d < 0 for d in shapes[name]) \
                else (shapes[name],) * 3
        # Largest input shapes over the profile; outputs: ask a scratch context for
        # their shapes at those maxima (-1 left = data dependent).
        max_in = {name: ranges[name][2] for name in inputs}
        max_out: dict[str, tuple[int, ...] | None] = {n: shapes[n] for n in outputs}
        if any(any(d < 0 for d in shapes[n]) for n in outputs):
            scratch = engine.create_execution_context()
            stream = Stream()
            try:
                if self.options.profile:
                    scratch.set_optimization_profile_async(self.options.profile, stream.handle)
                    stream.synchronize()
                for name, shape in max_in.items():
                    scratch.set_input_shape(name, shape)
                for name in outputs:
                    s = dims_tuple(scratch.get_tensor_shape(name))
                    max_out[name] = None if any(d < 0 for d in s) else max_shape([s])
            finally:
                stream.close()
                del scratch
        bindings = [TensorBinding(n, dtypes[n], True, max_in[n]) for n in inputs]
        bindings += [TensorBinding(n, dtypes[n], False, max_out[n]) for n in outputs]
        plan = plan_buffers(bindings)
        log.info("planned %.1f MB of I/O buffers per execution instance (%s)", plan.total_device_bytes / 1e6,
                 ", ".join(f"{n}={s}" for n, s in {**max_in, **max_out}.items()))
        return EngineIO(tuple(inputs), tuple(outputs), plan, self.options.profile, ranges, zero_copy)

    def create_instances(self, count: int) -> list[Any]:
        """``count`` execution instances (context + stream + buffers each), made now."""
        self._check_active()
        if count < 1:
            raise InvalidInputError(f"instances must be >= 1, got {count}.")
        assert self._ctx is not None
        made: list[TrtExecInstance] = []
        try:
            with self._ctx:
                for _ in range(count):
                    with self._instances_lock:
                        index = len(self._instances)
                        inst = TrtExecInstance(index, self._trt, self._engine, self._io, self._ctx,
                                               self.options.cuda_graph)
                        self._instances.append(inst)
                    made.append(inst)
        except BaseException:
            for inst in made:
                inst.close()
            raise
        return list(made)

    def _instance_pool(self) -> InstancePool[TrtExecInstance]:
        pool = self._own_pool
        if pool is None:
            with self._instances_lock:
                pool = self._own_pool
            if pool is None:
                pool = InstancePool(self.create_instances(self.options.instances), name=self.name)
                with self._instances_lock:
                    if self._own_pool is None:
                        self._own_pool = pool
                    else:  # another thread made one first: keep theirs
                        pool.close()
                        pool = self._own_pool
        return pool

    def deactivate_impl(self) -> None:
        if self._ctx is None:
            return
        pool, self._own_pool = self._own_pool, None
        if pool is not None:
            pool.close(wait=True)
        with self._instances_lock:
            instances, self._instances = self._instances, []
        with self._ctx:
            for inst in instances:
                inst.close()  # no-op for those their owner closed already
            for attr in ("_engine", "_runtime"):
                if hasattr(self, attr):
                    delattr(self, attr)
        self._ctx.close()
        self._ctx = None

    # ---- Runner interface ---------------------------------------------------------------------
    def _spec(self, name: str) -> TensorSpec:
        dims = tuple(d if d >= 0 else None for d in self._engine_shapes[name])
        return TensorSpec(name, dims, self._dtypes[name])

    def input_specs_impl(self) -> list[TensorSpec]:
        return [self._spec(n) for n in self._io.input_names]

    def output_specs_impl(self) -> list[TensorSpec]:
        return [self._spec(n) for n in self._io.output_names]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._instance_pool().borrow() as inst:
            return inst.run(feed)

    def profile_ranges(self) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Input name -> (min, opt, max) of the runner's optimization profile."""
        self._check_active()
        return dict(self._io.profile_ranges)

    def instance_memory_bytes(self) -> int | None:
        """Device bytes of one instance: planned I/O buffers + the context's activation memory."""
        self._check_active()
        activation = getattr(self._engine, "device_memory_size", 0)
        return int(self._io.plan.total_device_bytes) + int(activation or 0)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"tensorrt": getattr(getattr(self, "_trt", None), "__version__", None),
                  "device": self.options.device, "cuda_graph": self.options.cuda_graph,
                  "zero_copy": self._io.zero_copy if hasattr(self, "_io") and self._ctx else None,
                  "lean": self.options.lean, "profile": self.options.profile,
                  "instances": self.options.instances})
        if self._ctx is not None:
            d["gpu"] = self._ctx.device.name()
        return d

    # ---- the timing hook for trt_edge.bench ------------------------------------------------------
    @contextlib.contextmanager
    def timed_iterations(self, feed: Mapping[str, np.ndarray], *, cuda_graph: bool | None = None,
                         transfers: bool = True) -> Iterator[Callable[[], IterationTimes]]:
        """Borrow one instance, set it up for ``feed``; yields ``step()`` that times one query.

        The CUDA-graph choice is the borrowed instance's own (restored after), so a
        measurement never changes what other callers run with.
        """
        self._check_active()
        checked = self.validate_inputs(feed)
        assert self._ctx is not None
        with self._instance_pool().borrow() as inst, self._ctx:
            saved = inst.use_cuda_graph
            inst.use_cuda_graph = self.options.cuda_graph if cuda_graph is None else bool(cuda_graph)
            try:
                inst.set_shapes(checked)
                inst.stage_inputs(checked)
                yield lambda: inst.timed_iteration(transfers)
            finally:
                inst.use_cuda_graph = saved

    def timing_facts(self) -> dict[str, Any]:
        self._check_active()
        return {"zero_copy": self._io.zero_copy,
                "data_dependent_outputs": list(self._io.plan.data_dependent_outputs)}


__all__ = ["TensorRTRunner", "TrtRunnerOptions"]
