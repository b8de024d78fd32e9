"""The native CPU ``SparseLinear`` kernels, loaded with ctypes.

The library (``trt_edge/sparse/_lib/libtrt_edge_sparse.so``) is compiled from
``csrc/sparse/sparse_linear_cpu.cpp`` by ``pip install`` (``setup.py``) or by
``python -m trt_edge.sparse.build``. ``TRT_EDGE_SPARSE_LIB=/path/to/lib.so`` overrides
the location. Where it is missing, :func:`load_library` raises
:class:`MissingDependencyError` saying how to build it; nothing else in trt_edge needs it.

ctypes (not a CPython extension) keeps the library free of the Python ABI, so the same
file serves Python, the ONNX Runtime custom-op host and C/C++ callers.
"""
from __future__ import annotations

import ctypes
import functools
import os
import threading
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError, MissingDependencyError, TrtEdgeError
from .build import CPU_LIB_NAME, LIB_DIR
from .formats import BsrWeight, CsrWeight, SparseWeight, validate

_ABI_VERSION = 1
_lock = threading.Lock()

_i64, _i32 = ctypes.c_int64, ctypes.c_int32
_p = ctypes.c_void_p


def library_path() -> Path:
    """Where the CPU library is expected (``TRT_EDGE_SPARSE_LIB`` wins)."""
    env = os.environ.get("TRT_EDGE_SPARSE_LIB")
    return Path(env) if env else LIB_DIR / CPU_LIB_NAME


@functools.lru_cache(maxsize=None)
def _load(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    lib.tes_abi_version.restype = ctypes.c_int
    if lib.tes_abi_version() != _ABI_VERSION:
        raise MissingDependencyError(
            f"{path} has ABI version {lib.tes_abi_version()}, this trt_edge needs {_ABI_VERSION}: "
            "rebuild it with `python -m trt_edge.sparse.build` (or reinstall trt-edge).")
    for name in ("tes_linear_csr_f32", "tes_linear_csr_f16"):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int
        fn.argtypes = [_i64, _i64, _i64, _p, _p, _p, _p, _p, _p, ctypes.c_int, ctypes.c_int]
    for name in ("tes_linear_bsr_f32", "tes_linear_bsr_f16"):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int
        fn.argtypes = [_i64, _i64, _i64, _i32, _i32, _p, _p, _p, _p, _p, _p, ctypes.c_int,
                       ctypes.c_int]
    lib.tes_status_string.restype = ctypes.c_char_p
    lib.tes_status_string.argtypes = [ctypes.c_int]
    lib.tes_build_info.restype = ctypes.c_char_p
    lib.tes_default_threads.restype = ctypes.c_int
    return lib


def load_library() -> ctypes.CDLL:
    """The loaded CPU library, or :class:`MissingDependencyError` with the fix."""
    path = library_path()
    if not path.is_file():
        raise MissingDependencyError(
            f"The native sparse CPU library is not built ({path} is missing). It is compiled by "
            "`pip install -e .` when a C++ compiler is present; build it now with "
            "`python -m trt_edge.sparse.build` (needs g++ or clang++), or point "
            "TRT_EDGE_SPARSE_LIB at a built copy.")
    with _lock:
        try:
            return _load(str(path))
        except OSError as exc:
            raise MissingDependencyError(
                f"Could not load {path}: {exc}. Rebuild it with `python -m trt_edge.sparse.build`."
            ) from exc


def is_available() -> bool:
    """True if the CPU library loads. Never raises."""
    try:
        load_library()
    except TrtEdgeError:
        return False
    return True


def build_info() -> str:
    return load_library().tes_build_info().decode()


def default_threads() -> int:
    return int(load_library().tes_default_threads())


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


def sparse_linear(x: np.ndarray, weight: SparseWeight, bias: np.ndarray | None = None, *,
                  num_threads: int = 0, out: np.ndarray | None = None,
                  check: bool = False) -> np.ndarray:
    """``x @ W^T + bias`` with the native CPU kernel; ``x`` is [..., K], result [..., N].

    The dtype of ``weight.values`` (float32 or float16) selects the kernel; ``x`` and
    ``bias`` are cast to it (FP16 accumulates in FP32). ``out`` (C-contiguous, right
    shape and dtype) is written in place and returned. ``check=True`` re-validates the
    index arrays in Python and C (use for arrays from outside trt_edge.sparse.formats).
    """
    lib = load_library()
    dtype = weight.values.dtype
    if dtype not in (np.float32, np.float16):
        raise InvalidInputError(f"SparseLinear supports float32/float16 weights, got {dtype}.")
    if check:
        validate(weight)
    n, k = weight.shape
    x = np.ascontiguousarray(x, dtype=dtype)
    if x.ndim < 1 or x.shape[-1] != k:
        raise InvalidInputError(f"SparseLinear input has shape {x.shape}; its last dimension must "
                                f"be in_features={k}.")
    m = int(np.prod(x.shape[:-1], dtype=np.int64))
    out_shape = (*x.shape[:-1], n)
    if out is None:
        out = np.empty(out_shape, dtype=dtype)
    elif out.shape != out_shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise InvalidInputError(f"out must be C-contiguous {dtype} of shape {out_shape}.")
    b = None if bias is None else np.ascontiguousarray(bias, dtype=dtype).reshape(-1)
    if b is not None and b.shape != (n,):
        raise InvalidInputError(f"bias must have {n} entries, got {b.shape}.")
    vals = np.ascontiguousarray(weight.values)
    rp, ci = np.ascontiguousarray(weight.row_ptr), np.ascontiguousarray(weight.col_idx)
    suffix = "f16" if dtype == np.float16 else "f32"
    if isinstance(weight, CsrWeight):
        fn = getattr(lib, f"tes_linear_csr_{suffix}")
        status = fn(m, n, k, _ptr(rp), _ptr(ci), _ptr(vals), _ptr(b), _ptr(x), _ptr(out),
                    num_threads, int(check))
    elif isinstance(weight, BsrWeight):
        fn = getattr(lib, f"tes_linear_bsr_{suffix}")
        br, bc = weight.block
        status = fn(m, n, k, br, bc, _ptr(rp), _ptr(ci), _ptr(vals), _ptr(b), _ptr(x), _ptr(out),
                    num_threads, int(check))
    else:
        raise InvalidInputError(f"Not a sparse weight: {type(weight).__name__}.")
    if status != 0:
        raise InvalidInputError(f"SparseLinear CPU kernel failed: "
                                f"{lib.tes_status_string(status).decode()} (status {status}).")
    return out


class PreparedSparseLinear:
    """A weight bound to the native kernel for repeated calls with little Python overhead.

    What benchmarks and format selection time: per call it only checks ``x``/``out``
    shapes and dtypes and passes pointers (the weight arrays are validated once here).
    """

    def __init__(self, weight: SparseWeight, bias: np.ndarray | None = None, *,
                 num_threads: int = 0) -> None:
        validate(weight)
        self._lib = load_library()
        self.weight = weight
        self.dtype = weight.values.dtype
        self._keep = [np.ascontiguousarray(weight.row_ptr), np.ascontiguousarray(weight.col_idx),
                      np.ascontiguousarray(weight.values)]
        self._bias = None if bias is None else np.ascontiguousarray(bias, dtype=self.dtype)
        suffix = "f16" if self.dtype == np.float16 else "f32"
        rp, ci, v = (a.ctypes.data for a in self._keep)
        b = _ptr(self._bias)
        n, k = weight.shape
        self.n, self.k = n, k
        if isinstance(weight, CsrWeight):
            fn = getattr(self._lib, f"tes_linear_csr_{suffix}")
            self._call = lambda m, x, y: fn(m, n, k, rp, ci, v, b, x, y, num_threads, 0)
        else:
            fn = getattr(self._lib, f"tes_linear_bsr_{suffix}")
            br, bc = weight.block
            self._call = lambda m, x, y: fn(m, n, k, br, bc, rp, ci, v, b, x, y, num_threads, 0)

    def __call__(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out[:] = x @ W^T + bias`` for C-contiguous 2-D ``x`` [M, K] and ``out`` [M, N]."""
        if (x.dtype != self.dtype or out.dtype != self.dtype or x.ndim != 2 or x.shape[1] != self.k
                or out.shape != (x.shape[0], self.n) or not x.flags.c_contiguous
                or not out.flags.c_contiguous):
            raise InvalidInputError(f"PreparedSparseLinear needs C-contiguous {self.dtype} x [M, "
                                    f"{self.k}] and out [M, {self.n}].")
        status = self._call(x.shape[0], x.ctypes.data, out.ctypes.data)
        if status != 0:
            raise InvalidInputError(f"SparseLinear CPU kernel failed: "
                                    f"{self._lib.tes_status_string(status).decode()}.")
        return out
