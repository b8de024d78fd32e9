"""A loaded model's identity (name, version, content hash) and backend facts."""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from pathlib import Path
from typing import Any

import onnx

from ..artifacts import model_hash, read_sidecar, sha256_bytes, sha256_file, sidecar_path
from .base import Runner

log = logging.getLogger(__name__)

_DEVICE_PROVIDERS = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda",
                     "ROCMExecutionProvider": "rocm", "DmlExecutionProvider": "dml"}


@dataclasses.dataclass(frozen=True)
class ModelIdentity:
    """Who the model is: ``sha256`` of the artifact bytes (verified against its sidecar when present)."""

    name: str
    version: str
    sha256: str
    artifact: str | None = None       # file name, when loaded from a file
    sidecar_kind: str | None = None   # the sidecar's kind, when the artifact has one


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    backend: str     # "onnxruntime" | "tensorrt" | "litert" | "torch"
    provider: str    # e.g. "CPUExecutionProvider"
    precision: str   # "fp32" | "fp16" | "int8" | "mixed" | "unknown"
    device: str      # "cpu" | "cuda:0" ...


def _source_of(runner: Runner) -> Any:
    for attr in ("model", "engine_source", "artifact", "path"):
        value = getattr(runner, attr, None)
        if isinstance(value, (str, os.PathLike, bytes, onnx.ModelProto)):
            return value
    return None


def _sidecar(path: Path) -> dict[str, Any] | None:
    """The artifact's sidecar (sha256 checked by read_sidecar), or None when it has none.

    Cached per file state, so loading one model hashes a large engine once, not per question.
    """
    side = sidecar_path(path)
    if not side.exists():
        return None
    try:
        a, s = path.stat(), side.stat()
    except OSError:
        return read_sidecar(path)
    return _cached_sidecar(str(path), a.st_mtime_ns, a.st_size, s.st_mtime_ns, s.st_size)


@functools.lru_cache(maxsize=32)
def _cached_sidecar(path: str, *_file_state: int) -> dict[str, Any]:
    return read_sidecar(path)


def identity_of(artifact: Any, runner: Runner | None, *, name: str | None, version: str) -> ModelIdentity:
    """Identity of ``artifact`` (or, when None, of the runner's source); checks the sidecar's sha256."""
    source = artifact if artifact is not None or runner is None else _source_of(runner)
    kind = None
    file_name = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        side = _sidecar(path)
        digest = str(side["sha256"]) if side and side.get("sha256") else sha256_file(path)
        kind = side.get("kind") if side else None
        file_name = path.name
        default = path.name.split(".")[0] or path.stem
    elif isinstance(source, onnx.ModelProto):
        digest = model_hash(source)
        default = source.graph.name or "model"
    elif isinstance(source, bytes):
        digest = sha256_bytes(source)
        default = "model"
    else:  # a runner without an artifact (a torch module...): identity by name only
        digest = ""
        default = runner.name if runner is not None else "model"
    return ModelIdentity(name or default, str(version), digest, file_name, kind)


def _graph_precision(model: onnx.ModelProto) -> str:
    ops = {n.op_type for n in model.graph.node}
    if {"QuantizeLinear", "DequantizeLinear"} & ops:
        return "int8"
    f16 = any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    f32 = any(t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer)
    if f16:
        return "mixed" if f32 else "fp16"
    return "fp32"


def _precision(source: Any, backend: str) -> str:
    if isinstance(source, (str, os.PathLike)):
        side = _sidecar(Path(source))
        if side:
            section = side.get("engine")
            engine: dict[str, Any] = section if isinstance(section, dict) else {}
            value = engine.get("precision") or side.get("precision")
            if value:
                return str(value)
        if backend == "tensorrt":
            return "unknown"
        try:
            return _graph_precision(onnx.load(str(source), load_external_data=False))
        except Exception:  # noqa: BLE001 - not ONNX (a .tflite...): not known from here
            return "unknown"
    if isinstance(source, onnx.ModelProto):
        return _graph_precision(source)
    if isinstance(source, bytes) and backend == "onnxruntime":
        try:
            return _graph_precision(onnx.load_from_string(source))
        except Exception:  # noqa: BLE001
            return "unknown"
    return "unknown"


def backend_info_for(runner: Runner, artifact: Any) -> BackendInfo:
    source = artifact if artifact is not None else _source_of(runner)
    backend = runner.backend
    provider, device = backend, "cpu"
    if backend == "onnxruntime":
        session = getattr(runner, "session", None)
        providers = list(session.get_providers()) if session is not None else ["CPUExecutionProvider"]
        provider = providers[0]
        if provider in _DEVICE_PROVIDERS:
            opts = (getattr(getattr(runner, "options", None), "provider_options", None) or [{}])[0]
            device = f"{_DEVICE_PROVIDERS[provider]}:{dict(opts).get('device_id', 0)}"
    elif backend == "tensorrt":
        provider = "TensorRT"
        device = f"cuda:{getattr(getattr(runner, 'options', None), 'device', 0)}"
    return BackendInfo(backend, provider, _precision(source, backend), device)


__all__ = ["ModelIdentity", "BackendInfo", "identity_of", "backend_info_for"]
