"""The CUDA context helper shared by building (calibration batches) and the runtime.

It sits on the build side so that ``build`` never imports ``runtime`` (the
runtime imports it from here). pycuda is imported on first use only.

The device's *primary* context is used (``retain_primary_context``), never a
private one and never ``pycuda.autoinit``, so PyTorch and trt_edge share one
context and can exchange device pointers.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from .._lazy import require
from ..errors import RunnerError

log = logging.getLogger(__name__)


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


__all__ = ["CudaContext", "cuda_init"]
