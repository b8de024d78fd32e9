"""One TensorRT execution instance: execution context + stream + I/O buffers + events.

Made up front by :meth:`TensorRTRunner.create_instances` (N per model) and
lent by a pool to one caller at a time, so nothing here is shared between
threads and nothing is keyed by thread. Memory per instance: the planned I/O
buffers (``BufferPlan.total_device_bytes`` on the device plus as much
page-locked host staging; mapped host memory only, with zero-copy) plus the
context's activation memory (``engine.device_memory_size``).

* ``set_input_shape`` only when a shape changes; async H2D -> ``execute_async_v3``
  -> D2H on the instance's stream; optional CUDA-graph replay of the enqueue.
* Outputs whose shape depends on the data use an ``IOutputAllocator``.
"""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..build.cuda import CudaContext
from ..errors import InvalidInputError, RunnerError
from .cuda import DeviceBuffer, Event, HostBuffer, Stream, memcpy_dtoh_async, memcpy_htod_async, volume
from .cuda_graph import CudaGraph
from .cuda_plan import BufferPlan
from .timing import IterationTimes

if TYPE_CHECKING:  # pragma: no cover - typing only
    import tensorrt


def dims_tuple(dims: Any) -> tuple[int, ...]:
    """``trt.Dims`` (indexable, no ``__iter__`` in the stubs) or a sequence -> tuple of ints."""
    return tuple(int(dims[i]) for i in range(len(dims)))


@dataclasses.dataclass(frozen=True)
class EngineIO:
    """What every instance of one engine shares (read-only after loading)."""

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    plan: BufferPlan
    profile: int
    profile_ranges: Mapping[str, tuple[tuple[int, ...], ...]]
    zero_copy: bool


def make_output_allocator(trt: Any) -> Any:
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


class TrtExecInstance:
    """Context, stream, buffers and events of one concurrent inference (see module doc)."""

    def __init__(self, index: int, trt: Any, engine: "tensorrt.ICudaEngine", io: EngineIO,
                 ctx: CudaContext, cuda_graph: bool) -> None:
        self.index = index
        self.io = io
        self.ctx = ctx
        #: Replay a captured CUDA graph of the enqueue; the instance's own setting,
        #: changed only by its borrower (e.g. for one GPU timing run).
        self.use_cuda_graph = cuda_graph
        self._closed = False
        self.stream = Stream()
        context = engine.create_execution_context()
        if context is None:
            raise RunnerError("TensorRT could not create an execution context (out of GPU memory?).")
        self.context: tensorrt.IExecutionContext = context
        if io.profile:
            self.context.set_optimization_profile_async(io.profile, self.stream.handle)
        self.device: dict[str, DeviceBuffer] = {}
        self.host: dict[str, HostBuffer] = {}
        self.allocators: dict[str, Any] = {}
        for name, binding in io.plan.bindings.items():
            if binding.data_dependent:
                alloc = make_output_allocator(trt)
                self.allocators[name] = alloc
                self.context.set_output_allocator(name, alloc)
                continue
            nbytes = io.plan.nbytes[name]
            self.host[name] = HostBuffer(nbytes, mapped=io.zero_copy)
            if io.zero_copy:
                self.context.set_tensor_address(name, self.host[name].device_ptr)
            else:
                self.device[name] = DeviceBuffer(nbytes)
                self.context.set_tensor_address(name, self.device[name].ptr)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.graph: CudaGraph | None = None
        self.events = [Event() for _ in range(4)]

    # ---- one inference ----------------------------------------------------------------------
    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference on this instance's stream; outputs are copies owned by the caller."""
        if self._closed:
            raise RunnerError(f"TensorRT execution instance {self.index} was used after close().")
        with self.ctx:
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

    def set_shapes(self, feed: Mapping[str, np.ndarray]) -> bool:
        """``set_input_shape`` for inputs whose shape changed; True if any did."""
        changed = False
        for name in self.io.input_names:
            shape = tuple(feed[name].shape)
            if self.shapes.get(name) != shape:
                self.io.plan.check_fits(name, shape)
                if not self.context.set_input_shape(name, shape):
                    raise InvalidInputError(
                        f"TensorRT rejected shape {shape} for input '{name}': it is outside optimization "
                        f"profile {self.io.profile} ({self.io.profile_ranges.get(name)}).")
                self.shapes[name] = shape
                changed = True
        if changed and self.graph is not None:
            self.graph.close()  # captured for other shapes
            self.graph = None
        return changed

    def stage_inputs(self, feed: Mapping[str, np.ndarray]) -> None:
        for name in self.io.input_names:
            arr = feed[name]
            self.host[name].view(arr.dtype, arr.shape)[...] = arr

    def copy_inputs(self) -> None:
        if self.io.zero_copy:
            return
        for name in self.io.input_names:
            dtype = self.io.plan.bindings[name].dtype
            memcpy_htod_async(self.device[name].ptr, self.host[name].view(dtype, self.shapes[name]),
                              self.stream)

    def enqueue(self) -> None:
        use_graph = self.use_cuda_graph and not self.allocators
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
        for name in self.io.output_names:
            dtype = self.io.plan.bindings[name].dtype
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
                if not self.io.zero_copy:
                    memcpy_dtoh_async(view, self.device[name].ptr, self.stream)
            views[name] = view
        return views

    def timed_iteration(self, transfers: bool) -> IterationTimes:
        """One query timed with CUDA events (call with the CUDA context current)."""
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
        return IterationTimes(e1.elapsed_ms_since(e0), e2.elapsed_ms_since(e1), e3.elapsed_ms_since(e2),
                              enqueue_ms)

    def close(self) -> None:
        """Free the graph, buffers, events, stream and context. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with self.ctx:
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


__all__ = ["TrtExecInstance", "EngineIO", "dims_tuple", "make_output_allocator"]
