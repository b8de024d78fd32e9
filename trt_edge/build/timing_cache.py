"""Persistent TensorRT timing cache, keyed by TensorRT version and GPU.

Builds time many tactics; the timing cache keeps the results so the next build
(another precision, another model sharing layers) is faster. A cache is only
valid for the TensorRT version and GPU that produced it, so it is stored with a
small key file and silently restarted (with a log line) when the key differs,
instead of TensorRT rejecting it mid-build.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..artifacts import atomic_write_bytes, atomic_write_json
from .metadata import GpuInfo
from .versions import TrtVersion

log = logging.getLogger(__name__)


def cache_key(version: TrtVersion, gpu: GpuInfo | None) -> dict[str, Any]:
    return {"tensorrt": f"{version.major}.{version.minor}.{version.patch}",
            "gpu": gpu.name if gpu else None,
            "compute_capability": list(gpu.compute_capability) if gpu else None}


def _key_path(path: Path) -> Path:
    return path.with_name(path.name + ".key.json")


def load_timing_cache(path: str | os.PathLike[str] | None, version: TrtVersion,
                      gpu: GpuInfo | None) -> bytes:
    """Bytes of a reusable cache at ``path``, or ``b""`` (start a fresh cache).

    Guarantees: never returns a cache whose key (TensorRT version, GPU) differs
    from the current one.
    """
    if path is None:
        return b""
    p = Path(path)
    if not p.exists():
        return b""
    try:
        key = json.loads(_key_path(p).read_text())
    except (OSError, json.JSONDecodeError):
        log.info("timing cache %s has no readable key file: starting a fresh cache", p)
        return b""
    want = cache_key(version, gpu)
    if key != want:
        log.info("timing cache %s was made for %s, this build is %s: starting a fresh cache",
                 p, key, want)
        return b""
    return p.read_bytes()


def save_timing_cache(path: str | os.PathLike[str], data: bytes, version: TrtVersion,
                      gpu: GpuInfo | None) -> Path:
    """Write the cache and its key atomically (the key last, so a crash leaves no mismatch)."""
    p = Path(path)
    atomic_write_bytes(p, bytes(data))
    atomic_write_json(_key_path(p), cache_key(version, gpu))
    return p
