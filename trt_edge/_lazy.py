"""Lazy imports of heavy optional dependencies.

``import trt_edge`` must work with numpy and onnx alone (Jetson images and CI
containers often lack the rest). Anything heavier is imported on first use
through :func:`require`, which turns an ImportError into an error naming the
pip extra that provides the module.
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import MissingDependencyError

# module -> (pip extra, pip package) used in the install hint.
_EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("torch", "torch==2.13.0"),
    "onnxruntime": ("", "onnxruntime"),
    "onnx_graphsurgeon": ("", "onnx-graphsurgeon"),
    "tensorrt": ("tensorrt", "tensorrt"),
    "pycuda": ("tensorrt", "pycuda"),
    "pycuda.driver": ("tensorrt", "pycuda"),
    "transformers": ("models", "transformers"),
    "matplotlib": ("plots", "matplotlib"),
    "matplotlib.pyplot": ("plots", "matplotlib"),
    "onnxslim": ("dev", "onnxslim"),
    "onnxruntime_extensions": ("sparse", "onnxruntime-extensions"),
    "tflite": ("tflite", "tflite"),
    "ai_edge_litert": ("tflite", "ai-edge-litert"),
    "ai_edge_litert.interpreter": ("tflite", "ai-edge-litert"),
    "model_signing": ("registry", "model-signing"),
    "OpenSSL": ("registry", "pyOpenSSL"),
    "cryptography": ("registry", "cryptography"),
    "PyKCS11": ("registry", "PyKCS11"),
    "starlette": ("serve", "fastapi"),
    "uvicorn": ("serve", "uvicorn"),
    "prometheus_client": ("serve", "prometheus-client"),
}


def install_hint(module: str) -> str:
    extra, package = _EXTRAS.get(module, ("", module))
    if extra:
        return f"pip install 'trt-edge[{extra}]' (or: pip install {package})"
    return f"pip install {package}"


def require(module: str, purpose: str = "") -> Any:
    """Import ``module`` or raise :class:`MissingDependencyError` with a fix."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised via tests with a blocker
        why = f" (needed for {purpose})" if purpose else ""
        raise MissingDependencyError(
            f"'{module}' is not installed{why}. Install it with: {install_hint(module)}. "
            f"Original error: {exc}"
        ) from exc
    return mod
