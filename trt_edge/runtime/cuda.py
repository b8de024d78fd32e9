"""CUDA pieces of the TensorRT runner: buffer planning, pycuda resources, CUDA graphs.

Two halves:

* **Planning** (pure Python/NumPy, tested on every machine): how many bytes each
  engine tensor needs at the largest shape any optimization profile allows,
  aligned the way TensorRT wants, so buffers are allocated once and reused.
* **Resources** (pycuda, imported inside the functions): the primary context
  shared with PyTorch (``retain_primary_context`` + push/pop per thread, never
  ``pycuda.autoinit``), device buffers, page-locked and mapped (zero-copy) host
  buffers, streams, events and CUDA graphs. Every resource is a context manager
  whose ``close()`` is safe to call twice.

CUDA graphs: pycuda's driver wrapper has no stream-capture API we can rely on
across its releases, so capture goes through the CUDA *driver* API
(``libcuda``, always present where the driver is) with ``ctypes``:
``cuStreamBeginCapture_v2`` / ``cuStreamEndCapture`` /
``cuGraphInstantiateWithFlags`` / ``cuGraphLaunch``. Driver-API handles are the
same objects pycuda uses (``Stream.handle``), so no CUDA runtime library or
``cuda-python`` is needed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import logging
import math
import threading
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .._lazy import require
from ..errors import InvalidInputError, RunnerError

log = logging.getLogger(__name__)

#: TensorRT requires 256-byte aligned I/O addresses for some formats; cudaMalloc
#: returns 256-byte aligned memory, and we keep every slot a multiple of it.
TENSOR_ALIGNMENT = 256


# ==== planning (pure) ==========================================================================
def volume(shape: Sequence[int]) -> int:
    """Number of elements; raises on negative (still dynamic) dimensions."""
    if any(int(d) < 0 for d in shape):
        raise InvalidInputError(f"Shape {tuple(shape)} still has dynamic (-1) dimensions: set the "
                                "input shapes first.")
    return int(math.prod(int(d) for d in shape))


def align_up(n: int, alignment: int = TENSOR_ALIGNMENT) -> int:
    if alignment <= 0 or alignment & (alignment - 1):
        raise InvalidInputError(f"alignment must be a power of two, got {alignment}.")
    return (n + alignment - 1) & ~(alignment - 1)


def max_shape(shapes: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Element-wise maximum of same-rank shapes (e.g. an output's shape at each profile's max)."""
    if not shapes:
        raise InvalidInputError("max_shape needs at least one shape.")
    ranks = {len(s) for s in shapes}
    if len(ranks) != 1:
        raise InvalidInputError(f"Shapes of different ranks cannot be combined: {list(shapes)}.")
    return tuple(int(max(dims)) for dims in zip(*shapes))


@dataclasses.dataclass(frozen=True)
class TensorBinding:
    """One engine I/O tensor as the planner sees it.

    max_shape: the largest shape this tensor takes over every optimization
        profile; None for an output whose shape depends on the data (planned
        by an output allocator at run time instead).
    """

    name: str
    dtype: np.dtype
    is_input: bool
    max_shape: tuple[int, ...] | None

    @property
    def data_dependent(self) -> bool:
        return self.max_shape is None


@dataclasses.dataclass(frozen=True)
class BufferPlan:
    """Bytes per tensor (aligned), computed once per engine and reused for every inference."""

    bindings: Mapping[str, TensorBinding]
    nbytes: Mapping[str, int]
    alignment: int = TENSOR_ALIGNMENT

    @property
    def total_device_bytes(self) -> int:
        return int(sum(self.nbytes.values()))

    @property
    def data_dependent_outputs(self) -> list[str]:
        return [n for n, b in self.bindings.items() if b.data_dependent]

    def check_fits(self, name: str, shape: Sequence[int]) -> int:
        """Bytes a tensor of ``shape`` needs; raises if it exceeds the planned slot."""
        binding = self.bindings[name]
        need = volume(shape) * binding.dtype.itemsize
        have = self.nbytes.get(name)
        if have is not None and need > have:
            raise InvalidInputError(
                f"Tensor '{name}' of shape {tuple(shape)} needs {need} bytes but the engine's largest "
                f"profile allows {binding.max_shape} ({have} bytes): use a smaller shape or rebuild "
                "with a larger --shapes max.")
        return need


def plan_buffers(bindings: Sequence[TensorBinding], alignment: int = TENSOR_ALIGNMENT) -> BufferPlan:
    """Plan one buffer per tensor at its maximum size.

    Guarantees: every slot is >= ``alignment`` bytes and a multiple of it (a
    zero-sized tensor still gets a valid address), names are unique, and
    data-dependent outputs get no slot (their allocator provides one).
    """
    by_name: dict[str, TensorBinding] = {}
    sizes: dict[str, int] = {}
    for b in bindings:
        if b.name in by_name:
            raise InvalidInputError(f"Tensor name '{b.name}' appears twice in the engine's I/O.")
        by_name[b.name] = b
        if b.max_shape is None:
            if b.is_input:
                raise InvalidInputError(f"Input '{b.name}' has no maximum shape: the engine needs an "
                                        "optimization profile for it.")
            continue
        sizes[b.name] = max(alignment, align_up(volume(b.max_shape) * b.dtype.itemsize, alignment))
    return BufferPlan(by_name, sizes, alignment)


# ==== pycuda resources =========================================================================
def _driver() -> Any:
    return require("pycuda.driver", "the TensorRT runtime (CUDA buffers and streams)")


_init_lock = threading.Lock()
_initialised = False


def cuda_init() -> Any:
    """``cuda.init()`` once per process; returns ``pycuda.driver``."""
    global _initialised
    cuda = _driver()
    with _init_lock:
        if not _initialised:
            cuda.init()
            _initialised = True
    return cuda


class CudaContext:
    """The device's *primary* context, shared with PyTorch and other libraries.

    ``retain_primary_context`` (not ``make_context``) means PyTorch and we use the
    same context, so pointers can be exchanged. CUDA contexts are current per
    thread: use ``with ctx:`` (push/pop) around CUDA work in every thread;
    nesting is counted per thread.
    """

    def __init__(self, device: int = 0) -> None:
        cuda = cuda_init()
        self.device_index = device
        self.device = cuda.Device(device)
        self._ctx: Any = self.device.retain_primary_context()
        self._local = threading.local()
        self._closed = False

    @property
    def integrated(self) -> bool:
        """True on Jetson (GPU and CPU share memory): zero-copy mapped buffers pay off there."""
        cuda = _driver()
        return bool(self.device.get_attribute(cuda.device_attribute.INTEGRATED))

    @property
    def can_map_host_memory(self) -> bool:
        cuda = _driver()
        return bool(self.device.get_attribute(cuda.device_attribute.CAN_MAP_HOST_MEMORY))

    def push(self) -> None:
        if self._closed:
            raise RunnerError("CUDA context is closed.")
        depth = getattr(self._local, "depth", 0)
        self._ctx.push()
        self._local.depth = depth + 1

    def pop(self) -> None:
        depth = getattr(self._local, "depth", 0)
        if depth <= 0:
            return
        _driver().Context.pop()
        self._local.depth = depth - 1

    def __enter__(self) -> "CudaContext":
        self.push()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.pop()

    def close(self) -> None:
        """Release our reference to the primary context. Safe twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._ctx.detach()
        except Exception as exc:  # noqa: BLE001 - never raise from cleanup
            log.debug("primary context detach: %s", exc)


class DeviceBuffer:
    """``nbytes`` of device memory; ``ptr`` is the address TensorRT binds."""

    def __init__(self, nbytes: int) -> None:
        cuda = _driver()
        self.nbytes = int(nbytes)
        self._alloc: Any = cuda.mem_alloc(max(1, self.nbytes))

    @property
    def ptr(self) -> int:
        if self._alloc is None:
            raise RunnerError("DeviceBuffer used after close().")
        return int(self._alloc)

    def close(self) -> None:
        if self._alloc is not None:
            alloc, self._alloc = self._alloc, None
            alloc.free()

    def __enter__(self) -> "DeviceBuffer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class HostBuffer:
    """Page-locked host memory (fast async copies); ``mapped=True`` = zero-copy.

    A mapped buffer (``host_alloc_flags.DEVICEMAP``) is visible to the GPU at
    ``device_ptr``: on Jetson's integrated GPU TensorRT can read/write it
    directly, so no H2D/D2H copies are needed.
    """

    def __init__(self, nbytes: int, mapped: bool = False) -> None:
        cuda = _driver()
        self.nbytes = max(1, int(nbytes))
        self.mapped = mapped
        flags = cuda.host_alloc_flags.DEVICEMAP if mapped else 0
        self._array: Any = cuda.pagelocked_empty(self.nbytes, np.uint8, mem_flags=flags)

    @property
    def raw(self) -> np.ndarray:
        if self._array is None:
            raise RunnerError("HostBuffer used after close().")
        return self._array  # type: ignore[no-any-return]

    def view(self, dtype: "npt.DTypeLike", shape: Sequence[int]) -> np.ndarray:
        """A NumPy view of the first bytes as ``dtype[shape]`` (no copy)."""
        n = volume(shape) * np.dtype(dtype).itemsize
        if n > self.nbytes:
            raise InvalidInputError(f"View of {n} bytes exceeds the {self.nbytes}-byte host buffer.")
        return self.raw[:n].view(dtype).reshape(tuple(shape))

    @property
    def device_ptr(self) -> int:
        if not self.mapped:
            raise RunnerError("Only a mapped HostBuffer has a device pointer.")
        base: Any = self.raw.base  # pycuda's HostAllocation owns the pinned memory
        return int(base.get_device_pointer())

    def close(self) -> None:
        if self._array is not None:
            arr, self._array = self._array, None
            try:
                owner: Any = arr.base
                owner.free()
            except Exception as exc:  # noqa: BLE001
                log.debug("host buffer free: %s", exc)

    def __enter__(self) -> "HostBuffer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Stream:
    """A CUDA stream (non-blocking with respect to the legacy default stream)."""

    def __init__(self) -> None:
        cuda = _driver()
        self._stream: Any = cuda.Stream()

    @property
    def pycuda(self) -> Any:
        if self._stream is None:
            raise RunnerError("Stream used after close().")
        return self._stream

    @property
    def handle(self) -> int:
        return int(self.pycuda.handle)

    def synchronize(self) -> None:
        self.pycuda.synchronize()

    def close(self) -> None:
        self._stream = None  # pycuda destroys the stream when the object is collected

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Event:
    """A CUDA event for GPU-side timing (milliseconds between two recorded events)."""

    def __init__(self) -> None:
        self._event: Any = _driver().Event()

    def record(self, stream: Stream) -> "Event":
        self._event.record(stream.pycuda)
        return self

    def synchronize(self) -> None:
        self._event.synchronize()

    def elapsed_ms_since(self, start: "Event") -> float:
        """GPU time from ``start`` to this event (both recorded and complete)."""
        return float(start._event.time_till(self._event))

    def close(self) -> None:
        self._event = None


def memcpy_htod_async(dst_ptr: int, src: np.ndarray, stream: Stream) -> None:
    _driver().memcpy_htod_async(dst_ptr, src, stream.pycuda)


def memcpy_dtoh_async(dst: np.ndarray, src_ptr: int, stream: Stream) -> None:
    _driver().memcpy_dtoh_async(dst, src_ptr, stream.pycuda)


# ==== CUDA graphs through the driver API =========================================================
CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1  # cuda.h: CUstreamCaptureMode


class _LibCuda:
    """The few driver-API entry points CUDA-graph capture needs (ctypes, loaded on first use)."""

    _instance: "_LibCuda | None" = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        name = ctypes.util.find_library("cuda") or "libcuda.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            raise RunnerError(f"Cannot load the CUDA driver library ({name}): {exc}. CUDA graphs need "
                              "an NVIDIA driver.") from exc
        vp, cp = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
        begin = getattr(lib, "cuStreamBeginCapture_v2", None) or lib.cuStreamBeginCapture
        self.begin_capture = self._fn(begin, [vp, ctypes.c_int])
        self.end_capture = self._fn(lib.cuStreamEndCapture, [vp, cp])
        self.instantiate = self._fn(lib.cuGraphInstantiateWithFlags, [cp, vp, ctypes.c_ulonglong])
        self.launch = self._fn(lib.cuGraphLaunch, [vp, vp])
        self.exec_destroy = self._fn(lib.cuGraphExecDestroy, [vp])
        self.graph_destroy = self._fn(lib.cuGraphDestroy, [vp])
        self._error_string = self._fn(lib.cuGetErrorString, [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)])

    @staticmethod
    def _fn(fn: Any, argtypes: list[Any]) -> Any:
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int
        return fn

    @classmethod
    def get(cls) -> "_LibCuda":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def check(self, result: int, what: str) -> None:
        if result != 0:
            msg = ctypes.c_char_p()
            self._error_string(result, ctypes.byref(msg))
            text = msg.value.decode() if msg.value else f"CUresult {result}"
            raise RunnerError(f"{what} failed: {text}.")


class CudaGraph:
    """A captured and instantiated CUDA graph of the work ``fn`` enqueues on a stream.

    Capture uses thread-local mode, so other threads' CUDA calls (allocations
    by PyTorch, another runner) do not invalidate it. The captured work must
    use fixed addresses and shapes: re-capture after changing input shapes.
    """

    def __init__(self, graph: int, graph_exec: int) -> None:
        self._graph: int | None = graph
        self._exec: int | None = graph_exec

    @classmethod
    def capture(cls, stream: Stream, fn: Callable[[], Any]) -> "CudaGraph":
        lib = _LibCuda.get()
        handle = ctypes.c_void_p(stream.handle)
        lib.check(lib.begin_capture(handle, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture")
        graph = ctypes.c_void_p()
        try:
            fn()
        finally:
            # Always end the capture, or the stream stays unusable.
            end = lib.end_capture(handle, ctypes.byref(graph))
        lib.check(end, "cuStreamEndCapture (the enqueued work is not capturable)")
        graph_exec = ctypes.c_void_p()
        try:
            lib.check(lib.instantiate(ctypes.byref(graph_exec), graph, 0), "cuGraphInstantiate")
        except RunnerError:
            lib.graph_destroy(graph)
            raise
        return cls(int(graph.value or 0), int(graph_exec.value or 0))

    def launch(self, stream: Stream) -> None:
        if self._exec is None:
            raise RunnerError("CudaGraph used after close().")
        lib = _LibCuda.get()
        lib.check(lib.launch(ctypes.c_void_p(self._exec), ctypes.c_void_p(stream.handle)), "cuGraphLaunch")

    def close(self) -> None:
        lib = _LibCuda.get() if (self._exec or self._graph) else None
        if lib is not None:
            if self._exec:
                lib.exec_destroy(ctypes.c_void_p(self._exec))
            if self._graph:
                lib.graph_destroy(ctypes.c_void_p(self._graph))
        self._exec = self._graph = None

    def __enter__(self) -> "CudaGraph":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
