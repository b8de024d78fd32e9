"""Legacy TensorRT 10 INT8 calibrator (``IInt8EntropyCalibrator2``) fed by trt-edge.

TensorRT 11 removed implicit INT8; TensorRT 10 (every Jetson today) still has it.
:class:`EntropyCalibrator2Adapter` lets a TensorRT 10 build use either:
- our own calibration (a :class:`~trt_edge.quant.CalibrationResult`, a ranges
  ``.json`` file or a cache written by ``trt-edge calibrate --trt-cache``):
  ``read_calibration_cache`` hands TensorRT the cache and it never asks for data;
- TensorRT's calibration on our batches: ``get_batch`` copies each batch to the
  GPU (pycuda) and ``write_calibration_cache`` stores the result atomically.

``tensorrt`` and ``pycuda`` are imported only when the adapter is constructed.
For type checking the class derives from ``tensorrt.IInt8EntropyCalibrator2``
(so mypy checks our overrides against the stubs); at run time the real base is
attached on first construction (TensorRT is not importable when this module is).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from .._lazy import require
from ..artifacts import atomic_write_bytes
from ..errors import BuildError, MissingDependencyError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tensorrt import IInt8EntropyCalibrator2 as _TrtCalibratorBase

    from ..quant.ranges import CalibrationResult
else:
    _TrtCalibratorBase = object

log = logging.getLogger(__name__)
_REAL_CLASS: dict[str, type] = {}


def _tensorrt() -> Any:
    trt = require("tensorrt", "the legacy INT8 calibrator")
    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise MissingDependencyError(
            "This TensorRT has no IInt8EntropyCalibrator2 (TensorRT 11 removed implicit INT8, or only "
            "the type stubs are installed). Use explicit quantization: `trt-edge quantize` (Q/DQ).")
    return trt


class EntropyCalibrator2Adapter(_TrtCalibratorBase):
    """``EntropyCalibrator2Adapter(batches, cache, input_names, *, model_hash=None, batch_size=None)``.

    ``batches``: iterable of ``{input_name: np.ndarray}`` (may be empty when the
    cache holds ranges). ``cache``: a ``CalibrationResult``, a path to a ranges
    ``.json``, a path to a TensorRT cache (read if it exists, written by TensorRT
    otherwise), or None. ``input_names``: the network inputs in binding order.
    ``model_hash``: canonical hash of the model being built; a cache or ranges
    file made for another model raises :class:`~trt_edge.errors.ArtifactError`.
    ``batch_size``: the network's batch; when given, the batches are regrouped into exactly
    that many samples each (a fixed-batch network accepts no other; see
    :mod:`trt_edge.quant.batching`). Defaults to the first batch's leading dimension.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> "EntropyCalibrator2Adapter":
        if cls is EntropyCalibrator2Adapter:
            cls = _real_class()
        return super().__new__(cls)  # type: ignore[misc,no-any-return]

    def __init__(self, batches: Iterable[dict[str, np.ndarray]] | None,
                 cache: "CalibrationResult | str | os.PathLike[str] | None",
                 input_names: Sequence[str], *, model_hash: str | None = None,
                 batch_size: int | None = None) -> None:
        trt = _tensorrt()
        trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 bases must be initialised explicitly
        self.input_names = list(input_names)
        self.model_hash = model_hash
        self.trt_version = str(getattr(trt, "__version__", "10.0.0"))
        if batch_size is not None and batches is not None:
            from ..quant.batching import rebatch
            batches = rebatch(batches, batch_size, what="TensorRT calibration")
        self._batches: Iterator[dict[str, np.ndarray]] = iter(batches or [])
        self._first: dict[str, np.ndarray] | None = None
        self._device: dict[str, Any] = {}
        self._cache_bytes: bytes | None = None
        self._cache_path: Path | None = None
        self._load_cache(cache)
        if self._cache_bytes is None:
            self._first = next(self._batches, None)
            if self._first is None:
                raise BuildError("INT8 calibration needs data or a cache: give calibration batches "
                                 "(--calib-data) or a cache/ranges file (--calib-cache / --ranges).")
            missing = [n for n in self.input_names if n not in self._first]
            if missing:
                raise BuildError(f"Calibration batches lack network inputs {missing}; "
                                 f"they have {sorted(self._first)}.")
        self._batch_size = batch_size or (int(next(iter(self._first.values())).shape[0])
                                          if self._first else 1)

    # ------------------------------------------------------------------ our side
    def _load_cache(self, cache: Any) -> None:
        from ..quant.ranges import CalibrationResult
        from ..quant.trt_cache import load_trt_cache, render_trt_cache

        if cache is None:
            return
        if isinstance(cache, CalibrationResult):
            cache.check_model(expected_hash=self.model_hash, what="the calibration ranges")
            self._cache_bytes = render_trt_cache(cache, self.trt_version)
            return
        path = Path(cache)
        if path.suffix == ".json":
            result = CalibrationResult.load(path, expected_model_hash=self.model_hash)
            self._cache_bytes = render_trt_cache(result, self.trt_version)
            return
        self._cache_path = path
        if path.exists():
            self._cache_bytes = load_trt_cache(path, self.model_hash, self.trt_version)

    # ------------------------------------------------------------------ TensorRT's side
    def get_batch_size(self) -> int:
        return self._batch_size

    def get_batch(self, names: list[str]) -> list[int]:
        feed = self._first if self._first is not None else next(self._batches, None)
        self._first = None
        if feed is None:
            return []  # no more data: TensorRT computes the scales
        cuda = require("pycuda.driver", "copying calibration batches to the GPU")
        pointers = []
        for name in names:
            host = np.ascontiguousarray(feed[name])
            buf = self._device.get(name)
            if buf is None or buf[1] < host.nbytes:
                buf = (cuda.mem_alloc(host.nbytes), host.nbytes)
                self._device[name] = buf
            cuda.memcpy_htod(buf[0], host)
            pointers.append(int(buf[0]))
        return pointers

    def read_calibration_cache(self) -> bytes | None:  # type: ignore[override]
        return self._cache_bytes

    def write_calibration_cache(self, cache: Any) -> None:
        data = bytes(cache)
        self._cache_bytes = data
        if self._cache_path is not None:
            atomic_write_bytes(self._cache_path, data)
            log.info("wrote TensorRT calibration cache %s", self._cache_path)

    def close(self) -> None:
        """Free the device buffers (safe to call twice)."""
        for buf, _ in self._device.values():
            try:
                buf.free()
            except Exception:  # noqa: BLE001 - freeing at teardown must not raise
                pass
        self._device.clear()


def _real_class() -> type:
    """``EntropyCalibrator2Adapter`` with TensorRT's class as a real base (built once)."""
    trt = _tensorrt()
    key = f"{id(trt)}"
    if key not in _REAL_CLASS:
        _REAL_CLASS[key] = type("EntropyCalibrator2Adapter",
                                (EntropyCalibrator2Adapter, trt.IInt8EntropyCalibrator2), {})
    return _REAL_CLASS[key]
