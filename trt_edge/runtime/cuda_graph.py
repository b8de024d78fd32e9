"""CUDA graphs through the CUDA driver API (ctypes), for the TensorRT runtime.

pycuda's driver wrapper has no stream-capture API we can rely on across its
releases, so capture goes through ``libcuda`` (always present where the driver
is): ``cuStreamBeginCapture_v2`` / ``cuStreamEndCapture`` /
``cuGraphInstantiateWithFlags`` / ``cuGraphLaunch``. Driver-API handles are the
same objects pycuda uses (``Stream.handle``), so no CUDA runtime library or
``cuda-python`` is needed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any, Callable

from ..errors import RunnerError
from .cuda import Stream

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


__all__ = ["CudaGraph", "CU_STREAM_CAPTURE_MODE_THREAD_LOCAL"]
