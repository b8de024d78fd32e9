"""A small ctypes loader for the CUDA ``SparseLinear`` kernels (tests and the GPU benchmark).

``libtrt_edge_sparse_cuda.so`` is built from ``csrc/sparse/sparse_linear_kernels.cu`` with
nvcc (:func:`trt_edge.sparse.build.compile_cuda_library`; ``load_cuda_library(build=True)``
builds it on first use when nvcc is present). It carries its own host helpers (malloc,
copies, events), so no pycuda/torch is needed to drive it; callers that have torch may pass
``tensor.data_ptr()`` pointers and a ``torch.cuda.current_stream().cuda_stream`` instead.

Nothing here runs without an NVIDIA GPU; the CPU tier only compiles the sources.
"""
from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, MissingDependencyError, RunnerError
from .build import CUDA_LIB_NAME, LIB_DIR, compile_cuda_library
from .formats import BsrWeight, CsrWeight, SparseWeight, validate

_p, _i64, _i32, _sz = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_size_t


def cuda_library_path() -> Path:
    env = os.environ.get("TRT_EDGE_SPARSE_CUDA_LIB")
    return Path(env) if env else LIB_DIR / CUDA_LIB_NAME


@functools.lru_cache(maxsize=None)
def _load(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    for name in ("tes_cuda_linear_csr_f32", "tes_cuda_linear_csr_f16"):
        getattr(lib, name).argtypes = [_i64, _i32, _i32, _p, _p, _p, _p, _p, _p, _p]
    for name in ("tes_cuda_linear_bsr_f32", "tes_cuda_linear_bsr_f16"):
        getattr(lib, name).argtypes = [_i64, _i32, _i32, _i32, _i32, _p, _p, _p, _p, _p, _p, _p]
    lib.tes_cuda_error_string.restype = ctypes.c_char_p
    lib.tes_cuda_malloc.argtypes = [ctypes.POINTER(_p), _sz]
    lib.tes_cuda_free.argtypes = [_p]
    lib.tes_cuda_memcpy_h2d.argtypes = [_p, _p, _sz]
    lib.tes_cuda_memcpy_d2h.argtypes = [_p, _p, _sz]
    lib.tes_cuda_memcpy_d2d.argtypes = [_p, _p, _sz, _p]
    lib.tes_cuda_memset.argtypes = [_p, ctypes.c_int, _sz]
    lib.tes_cuda_event_create.argtypes = [ctypes.POINTER(_p)]
    lib.tes_cuda_event_destroy.argtypes = [_p]
    lib.tes_cuda_event_record.argtypes = [_p, _p]
    lib.tes_cuda_event_elapsed_ms.argtypes = [_p, _p, ctypes.POINTER(ctypes.c_float)]
    lib.tes_cuda_device_name.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    return lib


def load_cuda_library(build: bool = True) -> ctypes.CDLL:
    """The CUDA kernel library; built with nvcc first if missing and ``build``."""
    path = cuda_library_path()
    if not path.is_file():
        if not build:
            raise MissingDependencyError(f"{path} is not built: run `python -m trt_edge.sparse.build "
                                         "--cuda` (needs nvcc).")
        try:
            compile_cuda_library(path)
        except RuntimeError as exc:
            raise MissingDependencyError(f"Cannot build the CUDA sparse kernels: {exc}") from exc
    try:
        return _load(str(path))
    except OSError as exc:
        raise MissingDependencyError(f"Could not load {path}: {exc} (is the CUDA driver installed?)"
                                     ) from exc


def check(status: int, what: str) -> None:
    if status != 0:
        msg = _load(str(cuda_library_path())).tes_cuda_error_string(status).decode()
        raise RunnerError(f"{what} failed: {msg} (cudaError {status}).")


class DeviceBuffer:
    """cudaMalloc'd memory holding a copy of a host array; ``close()`` is safe twice."""

    def __init__(self, lib: ctypes.CDLL, host: np.ndarray | None = None, *, nbytes: int = 0) -> None:
        self._lib = lib
        self.nbytes = int(host.nbytes if host is not None else nbytes)
        ptr = _p()
        check(lib.tes_cuda_malloc(ctypes.byref(ptr), max(self.nbytes, 1)), "cudaMalloc")
        self.ptr: int | None = ptr.value
        if host is not None and self.nbytes:
            host = np.ascontiguousarray(host)
            check(lib.tes_cuda_memcpy_h2d(self.ptr, host.ctypes.data, self.nbytes), "copy to device")

    def to_host(self, out: np.ndarray) -> np.ndarray:
        check(self._lib.tes_cuda_memcpy_d2h(out.ctypes.data, self.ptr, out.nbytes), "copy to host")
        return out

    def close(self) -> None:
        if self.ptr is not None:
            self._lib.tes_cuda_free(self.ptr)
            self.ptr = None

    def __enter__(self) -> "DeviceBuffer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def launch(lib: ctypes.CDLL, weight: SparseWeight, m: int, ptrs: dict[str, int | None],
           stream: int | None = None) -> int:
    """Launch the kernel for ``weight`` on device pointers (keys: rp, ci, v, b, x, y)."""
    suffix = "f16" if weight.values.dtype == np.float16 else "f32"
    n, k = weight.shape
    if isinstance(weight, CsrWeight):
        return getattr(lib, f"tes_cuda_linear_csr_{suffix}")(
            m, n, k, ptrs["rp"], ptrs["ci"], ptrs["v"], ptrs["b"], ptrs["x"], ptrs["y"], stream)
    if isinstance(weight, BsrWeight):
        br, bc = weight.block
        return getattr(lib, f"tes_cuda_linear_bsr_{suffix}")(
            m, n, k, br, bc, ptrs["rp"], ptrs["ci"], ptrs["v"], ptrs["b"], ptrs["x"], ptrs["y"], stream)
    raise InvalidInputError(f"Not a sparse weight: {type(weight).__name__}.")


def sparse_linear_cuda(x: np.ndarray, weight: SparseWeight, bias: np.ndarray | None = None, *,
                       poison: bool = True) -> np.ndarray:
    """``x @ W^T + bias`` on the GPU (host arrays in and out; for tests, not for speed).

    ``poison`` fills the device output with NaN bytes first, so unwritten outputs show.
    """
    validate(weight)
    lib = load_cuda_library()
    dtype = weight.values.dtype
    n, k = weight.shape
    x = np.ascontiguousarray(x, dtype=dtype).reshape(-1, k)
    out = np.empty((x.shape[0], n), dtype=dtype)
    bufs = {"rp": DeviceBuffer(lib, weight.row_ptr), "ci": DeviceBuffer(lib, weight.col_idx),
            "v": DeviceBuffer(lib, weight.values), "x": DeviceBuffer(lib, x),
            "y": DeviceBuffer(lib, nbytes=out.nbytes)}
    if bias is not None:
        bufs["b"] = DeviceBuffer(lib, np.ascontiguousarray(bias, dtype=dtype))
    try:
        if poison:
            check(lib.tes_cuda_memset(bufs["y"].ptr, 0xFF, out.nbytes), "poison output")
        ptrs = {key: (buf.ptr if buf.nbytes else None) for key, buf in bufs.items()}
        ptrs.setdefault("b", None)
        ptrs["y"] = bufs["y"].ptr
        check(launch(lib, weight, x.shape[0], ptrs), "SparseLinear launch")
        check(lib.tes_cuda_synchronize(), "SparseLinear kernel")
        return bufs["y"].to_host(out)
    finally:
        for buf in bufs.values():
            buf.close()
