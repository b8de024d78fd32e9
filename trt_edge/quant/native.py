"""The native |x| histogram kernel (``csrc/calib``), loaded with ctypes when it is built.

Optional by design: without it :class:`~trt_edge.quant.methods.HistogramScratch` bins in
NumPy and produces the same counts (tested bit for bit), only slower. It is built by
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
_ABI_VERSION = 1
_lock = threading.Lock()


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
        return lib
    except (OSError, AttributeError) as exc:
        log.warning("Could not load %s (%s): using the NumPy histogram path.", path, exc)
        return None


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, or None (not built, disabled, or unloadable: logged)."""
    if os.environ.get("TRT_EDGE_CALIB_NATIVE", "1") == "0":
        return None
    path = library_path()
    if not path.is_file():
        return None
    with _lock:
        return _load(str(path))


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


def build(output: Path | None = None) -> Path:
    """Compile ``csrc/calib/abs_histogram.cpp`` into :data:`LIB_DIR` (needs a C++ compiler)."""
    from .._native_build import compile_shared_library
    src = source_path()
    if src is None:
        raise RuntimeError("csrc/calib/abs_histogram.cpp is not here (not a source checkout): reinstall "
                           "trt-edge from source with a C++ compiler to build the kernel.")
    path, label = compile_shared_library(src, Path(output or LIB_DIR / LIB_NAME), what="calibration kernel")
    _load.cache_clear()
    log.info("built %s (%s)", path, label)
    return path


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description="Build trt_edge's native calibration kernel (csrc/calib).").parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    print(f"calibration kernel: {build()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
