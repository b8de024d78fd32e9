"""pycuda resources of the TensorRT runtime: buffers, streams, events.

* Device buffers, page-locked and mapped (zero-copy) host buffers, streams and
  events. Every resource is a context manager whose ``close()`` is safe to call
  twice. pycuda is imported inside the constructors.
* The primary-context helper (:class:`CudaContext`) lives in
  ``trt_edge.build.cuda`` (building needs it too, and ``build`` must not import
  ``runtime``); buffer planning in ``trt_edge.runtime.cuda_plan``; CUDA graphs in
  ``trt_edge.runtime.cuda_graph``. Their names are re-exported here.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from .._lazy import require
from ..build.cuda import CudaContext, cuda_init
from ..errors import InvalidInputError, RunnerError
from .cuda_plan import (TENSOR_ALIGNMENT, BufferPlan, TensorBinding, align_up, max_shape, plan_buffers,
                        volume)

log = logging.getLogger(__name__)


def _driver() -> Any:
    return require("pycuda.driver", "the TensorRT runtime (CUDA buffers and streams)")


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


def __getattr__(name: str) -> Any:  # CudaGraph lives in cuda_graph (which imports Stream from here)
    if name in ("CudaGraph", "_LibCuda", "CU_STREAM_CAPTURE_MODE_THREAD_LOCAL"):
        from . import cuda_graph

        return getattr(cuda_graph, name)
    raise AttributeError(name)


__all__ = ["CudaContext", "cuda_init", "DeviceBuffer", "HostBuffer", "Stream", "Event", "memcpy_htod_async",
           "memcpy_dtoh_async", "TENSOR_ALIGNMENT", "BufferPlan", "TensorBinding", "align_up", "max_shape",
           "plan_buffers", "volume", "CudaGraph"]
