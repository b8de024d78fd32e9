"""INT8/FP16 precision: calibration (our own entropy calibrator), explicit Q/DQ, FP16, TensorRT caches.

One source of truth: :func:`calibrate` runs the FP32 model in ONNX Runtime on the
CPU and produces per-tensor ranges (:class:`CalibrationResult`), which become
either explicit Q/DQ nodes (:func:`quantize_qdq`, TensorRT 10 and 11) or a
TensorRT calibration cache (:func:`write_trt_cache`, the TensorRT 10 implicit path).
"""
from __future__ import annotations

from .calibrate import CALIBRATION_METHODS, CalibrationOptions, calibrate
from .data import (ImageFolderReader, ImagePreprocess, NumpyReader, TextReader,
                   TorchDataLoaderReader)
from .fp16 import Fp16Options, Fp16Report, convert_fp16
from .qdq import QuantizeOptions, quantize_qdq
from .ranges import CalibrationResult, TensorRange, canonical_model_hash
from .trt_cache import load_trt_cache, read_trt_cache, write_trt_cache

__all__ = [
    "CALIBRATION_METHODS", "CalibrationOptions", "calibrate", "CalibrationResult", "TensorRange", "canonical_model_hash",
    "QuantizeOptions", "quantize_qdq", "Fp16Options", "Fp16Report", "convert_fp16",
    "write_trt_cache", "read_trt_cache", "load_trt_cache",
    "NumpyReader", "ImageFolderReader", "ImagePreprocess", "TorchDataLoaderReader", "TextReader",
]
