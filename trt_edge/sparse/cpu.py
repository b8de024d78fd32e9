"""The native CPU ``SparseLinear`` kernels, loaded with ctypes.

The library (``trt_edge/sparse/_lib/libtrt_edge_sparse.so``) is compiled from
``csrc/sparse/sparse_linear_cpu.cpp`` by ``pip install`` (``setup.py``) or by
``python -m trt_edge.sparse.build``. ``TRT_EDGE_SPARSE_LIB=/path/to/lib.so`` overrides
the location. Where it is missing, :func:`load_library` raises
:class:`MissingDependencyError` saying how to build it; nothing else in trt_edge needs it.

ctypes (not a CPython extension) keeps the library free of the Python ABI, so the same
file serves Python, the ONNX Runtime custom-op host and C/C++ callers.

SIMD level: the library holds its kernels for AVX-512, AVX2+FMA and baseline x86-64 (on
aarch64: baseline = NEON) and uses the best one the CPU supports. ``TRT_EDGE_SPARSE_ISA=
avx512|avx2|baseline`` (read when the library loads) or :func:`set_isa` / :func:`forced_isa`
choose another, e.g. to test or benchmark the AVX2 path on an AVX-512 machine.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import InvalidInputError, MissingDependencyError, TrtEdgeError
from .build import CPU_LIB_NAME, LIB_DIR
from .formats import (AnyCpuWeight, BsrWeight, CsrWeight, PackedCsrWeight, validate,
                      validate_packed)

_ABI_VERSION = 2
#: SIMD levels the library may hold, fastest first ("baseline" = the architecture's baseline).
ISA_LEVELS = ("avx512", "avx2", "baseline")
#: Batch-1 inner loops of the packed CSR kernel (see csrc/sparse/sparse_linear_cpu.h).
PCSR_VARIANTS = {"auto": 0, "gather": 1, "loads": 2}
ISA_ENV = "TRT_EDGE_SPARSE_ISA"
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
    lib.tes_linear_pcsr_f32.restype = ctypes.c_int
    lib.tes_linear_pcsr_f32.argtypes = [_i64, _i64, _i64, _i32, _p, _p, _p, ctypes.c_int, _p, _p, _p,
                                        ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.tes_stream_read.restype = ctypes.c_uint64
    lib.tes_stream_read.argtypes = [_p, _i64, ctypes.c_int, ctypes.c_int]
    lib.tes_isa.restype = ctypes.c_char_p
    lib.tes_isa_supported.restype = ctypes.c_int
    lib.tes_isa_supported.argtypes = [ctypes.c_char_p]
    lib.tes_set_isa.restype = ctypes.c_int
    lib.tes_set_isa.argtypes = [ctypes.c_char_p]
    lib.tes_isa_env_status.restype = ctypes.c_int
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
            lib = _load(str(path))
        except OSError as exc:
            raise MissingDependencyError(
                f"Could not load {path}: {exc}. Rebuild it with `python -m trt_edge.sparse.build`."
            ) from exc
    if lib.tes_isa_env_status() != 0:
        supported = [name for name in ISA_LEVELS if lib.tes_isa_supported(name.encode())]
        raise InvalidInputError(
            f"{ISA_ENV}={os.environ.get(ISA_ENV)!r} is not a SIMD level this CPU and library can run; "
            f"use one of {', '.join(supported)} or auto (or unset it).")
    return lib


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


def isa() -> str:
    """The SIMD level the kernels run with now ("avx512", "avx2" or "baseline")."""
    return load_library().tes_isa().decode()


def supported_isas() -> list[str]:
    """The levels this CPU and library can run, fastest first ("baseline" always)."""
    lib = load_library()
    return [name for name in ISA_LEVELS if lib.tes_isa_supported(name.encode())]


def set_isa(name: str) -> str:
    """Use SIMD level ``name`` (or "auto" = the best) for every later call in this process.

    Returns the previous level. Raises :class:`InvalidInputError` for a level this CPU or
    build cannot run. Process-wide: meant for tests and benchmarks, not for concurrent use.
    """
    lib = load_library()
    previous = lib.tes_isa().decode()
    if lib.tes_set_isa(str(name).encode()) != 0:
        raise InvalidInputError(f"SIMD level {name!r} is not available here; this CPU and library run "
                                f"{', '.join(supported_isas())} (or 'auto').")
    return previous


@contextlib.contextmanager
def forced_isa(name: str) -> Iterator[str]:
    """``with forced_isa("avx2"): ...`` runs the kernels at that level, then restores the old one."""
    previous = set_isa(name)
    try:
        yield isa()
    finally:
        set_isa(previous)


def stream_read(buffer: np.ndarray, num_threads: int = 1, *, prefetch: bool = False) -> int:
    """Read every byte of ``buffer`` once, sequentially, with the active SIMD level's loads
    (``prefetch``: plus the kernels' software prefetch). The read-bandwidth probe that
    benchmarks time for the byte count a kernel must read; returns a checksum of the bytes."""
    buf = np.ascontiguousarray(buffer)
    return int(load_library().tes_stream_read(buf.ctypes.data, buf.nbytes, num_threads, int(prefetch)))


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


def _variant_code(variant: str) -> int:
    if variant not in PCSR_VARIANTS:
        raise InvalidInputError(f"Unknown packed-CSR variant {variant!r}: use one of {', '.join(PCSR_VARIANTS)}.")
    return PCSR_VARIANTS[variant]


def _bind(lib: ctypes.CDLL, weight: AnyCpuWeight, bias: np.ndarray | None, num_threads: int,
          variant: str, check: bool) -> tuple[list[np.ndarray], Callable[[int, int, int], int]]:
    """(arrays to keep alive, call(m, x_ptr, y_ptr) -> status) for one weight."""
    n, k = weight.shape
    chk = int(check)
    if isinstance(weight, PackedCsrWeight):
        code = _variant_code(variant)
        keep = [np.ascontiguousarray(weight.row_ptr), np.ascontiguousarray(weight.col_idx),
                np.ascontiguousarray(weight.values)]
        f16 = int(weight.values.dtype == np.float16)
        t = weight.panel_cols
        fn = lib.tes_linear_pcsr_f32
        rp, ci, v = (a.ctypes.data for a in keep)
        b = _ptr(bias)
        return keep, lambda m, x, y: fn(m, n, k, t, rp, ci, v, f16, b, x, y, num_threads, code, chk)
    keep = [np.ascontiguousarray(weight.row_ptr), np.ascontiguousarray(weight.col_idx),
            np.ascontiguousarray(weight.values)]
    suffix = "f16" if weight.values.dtype == np.float16 else "f32"
    rp, ci, v = (a.ctypes.data for a in keep)
    b = _ptr(bias)
    if isinstance(weight, CsrWeight):
        fn = getattr(lib, f"tes_linear_csr_{suffix}")
        return keep, lambda m, x, y: fn(m, n, k, rp, ci, v, b, x, y, num_threads, chk)
    if isinstance(weight, BsrWeight):
        fn = getattr(lib, f"tes_linear_bsr_{suffix}")
        br, bc = weight.block
        return keep, lambda m, x, y: fn(m, n, k, br, bc, rp, ci, v, b, x, y, num_threads, chk)
    raise InvalidInputError(f"Not a sparse weight: {type(weight).__name__}.")


def activation_dtype(weight: AnyCpuWeight) -> np.dtype:
    """The dtype of x, bias and y for ``weight``: the values' dtype, FP32 for packed CSR
    (whose FP16 values are storage only)."""
    return np.dtype(np.float32) if isinstance(weight, PackedCsrWeight) else weight.values.dtype


def _check_weight(weight: AnyCpuWeight) -> None:
    if isinstance(weight, PackedCsrWeight):
        validate_packed(weight)
    elif isinstance(weight, (CsrWeight, BsrWeight)):
        validate(weight)
    else:
        raise InvalidInputError(f"Not a sparse weight: {type(weight).__name__}.")


def sparse_linear(x: np.ndarray, weight: AnyCpuWeight, bias: np.ndarray | None = None, *,
                  num_threads: int = 0, out: np.ndarray | None = None,
                  check: bool = False, variant: str = "auto") -> np.ndarray:
    """``x @ W^T + bias`` with the native CPU kernel; ``x`` is [..., K], result [..., N].

    The dtype of ``weight.values`` (float32 or float16) selects the kernel; ``x`` and
    ``bias`` are cast to it (FP16 accumulates in FP32). A :class:`PackedCsrWeight` always
    takes and returns float32 (its FP16 values are storage only); ``variant`` picks its
    batch-1 loop ("auto", "gather", "loads"). ``out`` (C-contiguous, right shape and dtype)
    is written in place and returned. ``check=True`` re-validates the index arrays in Python
    and C (use for arrays from outside trt_edge.sparse.formats).
    """
    lib = load_library()
    if not isinstance(weight, (CsrWeight, BsrWeight, PackedCsrWeight)):
        raise InvalidInputError(f"Not a sparse weight: {type(weight).__name__}.")
    if weight.values.dtype not in (np.float32, np.float16):
        raise InvalidInputError(f"SparseLinear supports float32/float16 weights, got {weight.values.dtype}.")
    if check:
        _check_weight(weight)
    dtype = activation_dtype(weight)
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
    _keep, call = _bind(lib, weight, b, num_threads, variant, check)
    status = call(m, x.ctypes.data, out.ctypes.data)
    if status != 0:
        raise InvalidInputError(f"SparseLinear CPU kernel failed: "
                                f"{lib.tes_status_string(status).decode()} (status {status}).")
    return out


class PreparedSparseLinear:
    """A weight bound to the native kernel for repeated calls with little Python overhead.

    What benchmarks and format selection time: per call it only checks ``x``/``out``
    shapes and dtypes and passes pointers (the weight arrays are validated once here).
    ``variant`` applies to :class:`PackedCsrWeight` only (its batch-1 loop).
    """

    def __init__(self, weight: AnyCpuWeight, bias: np.ndarray | None = None, *,
                 num_threads: int = 0, variant: str = "auto") -> None:
        _check_weight(weight)
        self._lib = load_library()
        self.weight = weight
        self.dtype = activation_dtype(weight)
        self.variant = variant
        self.num_threads = num_threads
        self._bias = None if bias is None else np.ascontiguousarray(bias, dtype=self.dtype)
        self._keep, self._call = _bind(self._lib, weight, self._bias, num_threads, variant, False)
        self.n, self.k = weight.shape

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
