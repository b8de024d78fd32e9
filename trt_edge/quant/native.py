"""The native calibration kernels (``csrc/calib``), loaded with ctypes when they are built.

Optional by design: without them :class:`~trt_edge.quant.methods.HistogramScratch` bins in
NumPy and produces the same counts (tested bit for bit), and the entropy and MSE searches run
their NumPy reference (the same thresholds, tested), only slower. It is built by
``pip install`` where a C++ compiler is present, or by ``python -m trt_edge.quant.native``.
``TRT_EDGE_CALIB_LIB=/path/to/lib.so`` loads another build; ``TRT_EDGE_CALIB_NATIVE=0``
forces the NumPy path.
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import logging
import os
import sys
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

LIB_DIR = Path(__file__).resolve().parent / "_lib"
LIB_NAME = "libtrt_edge_calib.so"
_ABI_VERSION = 3
_lock = threading.Lock()
# TRT_EDGE_CALIB_LIB's value (None: the default path) -> loaded library; cleared by build()
_loaded: dict[str | None, ctypes.CDLL] = {}


def library_path() -> Path:
    env = os.environ.get("TRT_EDGE_CALIB_LIB")
    return Path(env) if env else LIB_DIR / LIB_NAME


def source_path() -> Path | None:
    """``csrc/calib/abs_histogram.cpp`` of the source checkout (None for a non-editable install)."""
    src = Path(__file__).resolve().parents[2] / "csrc" / "calib" / "abs_histogram.cpp"
    return src if src.is_file() else None


@functools.lru_cache(maxsize=None)
def _load(path: str) -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(path)
        lib.tec_abi_version.restype = ctypes.c_int
        if lib.tec_abi_version() != _ABI_VERSION:
            log.warning("%s has ABI version %d, this trt_edge needs %d: using the NumPy histogram path "
                        "(rebuild with `python -m trt_edge.quant.native`).", path, lib.tec_abi_version(),
                        _ABI_VERSION)
            return None
        fn = lib.tec_abs_histogram_f32
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int64]
        fn = lib.tec_abs_max_channel_sums_f32
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                       ctypes.POINTER(ctypes.c_float)]
        dbl = ctypes.POINTER(ctypes.c_double)
        fn = lib.tec_entropy_level_terms
        fn.restype = ctypes.c_int
        fn.argtypes = [dbl, dbl, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, dbl, dbl]
        fn = lib.tec_mse_errors
        fn.restype = ctypes.c_int
        fn.argtypes = [dbl, dbl, ctypes.c_int64, dbl, ctypes.c_int64, ctypes.c_int64, dbl]
        return lib
    except (OSError, AttributeError) as exc:
        log.warning("Could not load %s (%s): using the NumPy histogram path.", path, exc)
        return None


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, or None (not built, disabled, or unloadable: logged)."""
    env = os.environ
    if env.get("TRT_EDGE_CALIB_NATIVE", "1") == "0":
        return None
    override = env.get("TRT_EDGE_CALIB_LIB")
    loaded = _loaded.get(override)
    if loaded is not None:  # the per-tensor calls of a calibration pass: no path maths, stat or lock
        return loaded
    path = str(library_path())
    if not os.path.isfile(path):
        return None
    with _lock:
        lib = _load(path)
    if lib is not None:
        _loaded[override] = lib
    return lib


def available() -> bool:
    return library() is not None


def abs_histogram_f32(flat: np.ndarray, inv_width: np.float32, counts: np.ndarray) -> bool:
    """Add ``flat``'s |x| counts into ``counts`` natively; False (nothing done) if the kernel
    is unavailable or the arrays are not the contiguous float32 / int64 it takes."""
    lib = library()
    if lib is None or flat.dtype != np.float32 or counts.dtype != np.int64 \
            or not flat.flags.c_contiguous or not counts.flags.c_contiguous or not counts.flags.writeable:
        return False
    status = lib.tec_abs_histogram_f32(flat.ctypes.data, flat.size, float(inv_width), counts.ctypes.data,
                                       counts.size)
    if status != 0:  # argument check failed in C: nothing was written, fall back
        return False
    return True


def abs_max_channel_sums_f32(x: np.ndarray, axis: int | None = None,
                             sums: np.ndarray | None = None) -> float | None:
    """max |x| of the float32 C-contiguous ``x`` in one native pass, adding the sum of ``x`` over
    every axis but ``axis`` into ``sums`` (float64, ``x.shape[axis]`` long) when both are given.
    None (nothing added) where the kernel is unavailable, the arrays do not fit, or ``x`` holds
    a NaN or inf: the caller then uses NumPy, which knows how to filter them."""
    lib = library()
    if lib is None or x.dtype != np.float32 or not x.flags.c_contiguous or x.size == 0:
        return None
    if axis is not None and sums is not None:
        if x.ndim == 0:
            return None
        ax = axis % x.ndim
        lead, channels = int(np.prod(x.shape[:ax], dtype=np.int64)), int(x.shape[ax])
        inner = int(np.prod(x.shape[ax + 1:], dtype=np.int64))
        if sums.dtype != np.float64 or sums.shape != (channels,) or not sums.flags.c_contiguous \
                or not sums.flags.writeable:
            return None
        sums_ptr = sums.ctypes.data
    else:
        lead, channels, inner, sums_ptr = 1, 1, int(x.size), None
    out = ctypes.c_float(0.0)
    if sums_ptr is not None:
        # a NaN/inf batch must leave ``sums`` as it was: add into a scratch copy, commit on success
        scratch = np.zeros_like(sums)
        status = lib.tec_abs_max_channel_sums_f32(x.ctypes.data, lead, channels, inner, scratch.ctypes.data,
                                                  ctypes.byref(out))
        if status == 0:
            sums += scratch
    else:
        status = lib.tec_abs_max_channel_sums_f32(x.ctypes.data, lead, channels, inner, None, ctypes.byref(out))
    return float(out.value) if status == 0 else None


def _f64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def _ptr(a: np.ndarray) -> "ctypes._Pointer[ctypes.c_double]":
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_double))


def entropy_level_terms(csum: np.ndarray, cnz: np.ndarray, levels: int, start: int,
                        outliers: np.ndarray) -> np.ndarray | None:
    """For slice lengths ``start .. start + len(outliers) - 1``: ``sum_j q_j log(q_j / n_j) +
    outliers log(q_last / n_last)`` over the ``levels`` levels (what
    :func:`~trt_edge.quant.methods.entropy_kl_curve` computes in NumPy, its reference). None where
    the kernel is unavailable."""
    lib = library()
    if lib is None:
        return None
    csum, cnz, outliers = _f64(csum), _f64(cnz), _f64(outliers)
    out = np.empty(outliers.size, np.float64)
    status = lib.tec_entropy_level_terms(_ptr(csum), _ptr(cnz), csum.size - 1, int(levels), int(start),
                                         outliers.size, _ptr(outliers), _ptr(out))
    return out if status == 0 else None


def mse_errors(centres: np.ndarray, weights: np.ndarray, thresholds: np.ndarray, levels: int) -> np.ndarray | None:
    """Weighted squared fake-quantization error of ``centres`` at each threshold (see
    :func:`~trt_edge.quant.methods._mse_errors`, the NumPy reference). None where the kernel is
    unavailable."""
    lib = library()
    if lib is None:
        return None
    centres, weights, thresholds = _f64(centres), _f64(weights), _f64(thresholds)
    out = np.empty(thresholds.size, np.float64)
    status = lib.tec_mse_errors(_ptr(centres), _ptr(weights), centres.size, _ptr(thresholds), thresholds.size,
                                int(levels), _ptr(out))
    return out if status == 0 else None


def build(output: Path | None = None) -> Path:
    """Compile ``csrc/calib/abs_histogram.cpp`` into :data:`LIB_DIR` (needs a C++ compiler)."""
    from .._native_build import compile_shared_library
    src = source_path()
    if src is None:
        raise RuntimeError("csrc/calib/abs_histogram.cpp is not here (not a source checkout): reinstall "
                           "trt-edge from source with a C++ compiler to build the kernel.")
    path, label = compile_shared_library(src, Path(output or LIB_DIR / LIB_NAME), what="calibration kernel")
    _load.cache_clear()
    _loaded.clear()
    log.info("built %s (%s)", path, label)
    return path


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description="Build trt_edge's native calibration kernel (csrc/calib).").parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    print(f"calibration kernel: {build()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
