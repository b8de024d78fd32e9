"""TensorRT availability and version detection.

With ``tensorrt-stubs`` installed unpatched, ``import tensorrt`` succeeds as an
empty namespace package, so availability is decided by a real attribute
(``tensorrt.Builder``), never by the import alone. Versions are compared as
integer tuples, never as strings ("10.10" > "10.9").
"""
from __future__ import annotations

import dataclasses
import importlib
import re
from typing import Any

from .._lazy import install_hint
from ..errors import InvalidInputError, MissingDependencyError


@dataclasses.dataclass(frozen=True, order=True)
class TrtVersion:
    """A TensorRT version as integers: ``TrtVersion(10, 3, 0)``."""

    major: int
    minor: int = 0
    patch: int = 0
    build: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}" + (f".{self.build}" if self.build else "")

    @property
    def has_weak_typing(self) -> bool:
        """TensorRT 10 keeps BuilderFlag.FP16/INT8 and calibrators; 11 removed them."""
        return self.major < 11

    @property
    def supports_dla(self) -> bool:
        """DLA is reachable through TensorRT 10.x (Jetson Orin); not in 11.x so far."""
        return self.major == 10


_VERSION_RE = re.compile(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:\.(\d+))?")


def parse_version(text: str) -> TrtVersion:
    """Parse ``"10.3.0.26"``, ``"11.4"``, ``"10.13.0.35.post1"`` into integers."""
    m = _VERSION_RE.match(str(text))
    if not m:
        raise InvalidInputError(f"Cannot parse TensorRT version '{text}': expected MAJOR.MINOR[.PATCH].")
    parts = [int(g) if g is not None else 0 for g in m.groups()]
    return TrtVersion(*parts)


def _real_tensorrt(module_name: str = "tensorrt") -> Any | None:
    try:
        mod = importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 - a broken install is "not available"
        return None
    # The stub-only namespace package has no attributes at all.
    if not hasattr(mod, "Builder" if module_name == "tensorrt" else "Runtime"):
        return None
    return mod


def tensorrt_available() -> bool:
    """True when a real TensorRT (not the stub namespace package) imports."""
    return _real_tensorrt() is not None


def lean_runtime_available() -> bool:
    """True when ``tensorrt_lean`` (the lean runtime for version-compatible engines) imports."""
    return _real_tensorrt("tensorrt_lean") is not None


def load_tensorrt(purpose: str = "building or running TensorRT engines", lean: bool = False) -> Any:
    """Return the real ``tensorrt`` (or ``tensorrt_lean``) module or raise with an install hint."""
    name = "tensorrt_lean" if lean else "tensorrt"
    mod = _real_tensorrt(name)
    if mod is None:
        raise MissingDependencyError(
            f"TensorRT ('{name}') is not installed (needed for {purpose}). On Jetson it comes with "
            f"JetPack (python3-libnvinfer); on a workstation: {install_hint('tensorrt')}. Without "
            "TensorRT, `trt-edge build` writes an ONNX artifact for the ONNX Runtime backend instead.")
    return mod


def tensorrt_version() -> TrtVersion | None:
    """The installed TensorRT version, or None when TensorRT is not installed."""
    mod = _real_tensorrt()
    return parse_version(mod.__version__) if mod is not None else None
