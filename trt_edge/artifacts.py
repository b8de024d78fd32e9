"""Atomic artifact writing, hashing and JSON sidecars.

Every file trt_edge produces is written to a temporary file in the target
folder and renamed over the destination only once it is complete, so a crash
or a failed step never leaves a half-written artifact. Every artifact gets a
sidecar ``<artifact>.json`` that records how to reproduce it: the hashes of
its sources, the tool versions and the options used.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import onnx

from .errors import ArtifactError

SIDECAR_SCHEMA = 1
SIDECAR_SUFFIX = ".json"

# Distributions whose versions are recorded in every sidecar when installed.
_TRACKED_DISTRIBUTIONS = (
    "trt-edge", "numpy", "onnx", "onnxruntime", "onnx-graphsurgeon", "torch",
    "tensorrt", "pycuda", "onnxscript", "transformers",
)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except FileNotFoundError as exc:
        raise ArtifactError(f"Cannot hash '{path}': the file does not exist.") from exc
    return h.hexdigest()


def model_hash(model: onnx.ModelProto | str | os.PathLike[str]) -> str:
    """SHA-256 of a model's serialized bytes (of the file, if a path)."""
    if isinstance(model, onnx.ModelProto):
        return sha256_bytes(model.SerializeToString(deterministic=True))
    return sha256_file(model)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    dest = Path(path)
    if dest.is_dir():
        raise ArtifactError(f"Cannot write '{dest}': it is a directory. Give a file name.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike[str],
              external_data: bool = False) -> Path:
    """Save an ONNX model atomically.

    Models over protobuf's 2 GB limit need ``external_data=True``; the weights
    then go to ``<name>.data`` beside the model (also written atomically).
    """
    dest = Path(path)
    if external_data:
        # onnx writes the data file relative to the model: write both under their
        # final names in a scratch folder beside the destination, then rename the
        # weights first and the model last, so a reader never sees a model
        # pointing at missing weights.
        dest.parent.mkdir(parents=True, exist_ok=True)
        data_name = dest.name + ".data"
        with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent) as scratch:
            scratch_model = Path(scratch) / dest.name
            copy = onnx.ModelProto()
            copy.CopyFrom(model)  # saving with external data rewrites the proto: keep the caller's
            onnx.save_model(copy, scratch_model, save_as_external_data=True,
                            all_tensors_to_one_file=True, location=data_name, size_threshold=0)
            if (Path(scratch) / data_name).exists():
                os.replace(Path(scratch) / data_name, dest.parent / data_name)
            os.replace(scratch_model, dest)
        return dest
    size = model.ByteSize()
    if size > 2_000_000_000:
        raise ArtifactError(
            f"Model is {size / 1e9:.1f} GB, over protobuf's 2 GB limit: save it with external data "
            "(--external-data / external_data=True).")
    return atomic_write_bytes(dest, model.SerializeToString())


def load_onnx(path: str | os.PathLike[str], load_external_data: bool = True) -> onnx.ModelProto:
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"ONNX file '{p}' does not exist. Check the path.")
    try:
        return onnx.load(str(p), load_external_data=load_external_data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises many types
        raise ArtifactError(f"'{p}' is not a readable ONNX model ({exc}). "
                            "Re-export it or check that the file is complete.") from exc


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in _TRACKED_DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def machine_info() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "system": platform.system(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, paths, numpy values and tuples to JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():
        return obj.item()  # numpy scalar
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return obj.tolist()
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    return obj


def sidecar_path(artifact: str | os.PathLike[str]) -> Path:
    p = Path(artifact)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def write_sidecar(artifact: str | os.PathLike[str], kind: str, *,
                  sources: Mapping[str, str | os.PathLike[str]] | None = None,
                  options: Any = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``<artifact>.json`` describing how ``artifact`` was made.

    ``sources`` maps a role ("onnx", "ranges", ...) to a file path (hashed here)
    or to an already computed ``sha256:...`` string.
    """
    art = Path(artifact)
    if not art.exists():
        raise ArtifactError(f"Cannot write a sidecar for '{art}': the artifact does not exist.")
    src: dict[str, Any] = {}
    for role, value in (sources or {}).items():
        sval = os.fspath(value)
        if sval.startswith("sha256:"):
            src[role] = {"sha256": sval.split(":", 1)[1]}
        else:
            src[role] = {"path": sval, "sha256": sha256_file(sval)}
    meta = {
        "schema": SIDECAR_SCHEMA,
        "kind": kind,
        "artifact": art.name,
        "sha256": sha256_file(art),
        "size_bytes": art.stat().st_size,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "sources": src,
        "tool_versions": tool_versions(),
        "options": to_jsonable(options) if options is not None else {},
    }
    if extra:
        meta.update(to_jsonable(dict(extra)))
    return atomic_write_json(sidecar_path(art), meta)


def read_sidecar(artifact: str | os.PathLike[str]) -> dict[str, Any]:
    side = sidecar_path(artifact)
    if not side.exists():
        raise ArtifactError(f"'{artifact}' has no sidecar '{side.name}'. Was it made by trt-edge?")
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"Sidecar '{side}' is not valid JSON ({exc}). Rebuild the artifact.") from exc
