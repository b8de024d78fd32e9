"""Build an ONNX model into a TensorRT engine once and reuse it (keyed by content and options).

This is what ``open_runner(model.onnx, backend="tensorrt")`` and
``TensorRTRunner.from_onnx`` use. The key is the SHA-256 of the model bytes,
the precision and a hash of the build options, so a changed model or option
builds a new engine and an unchanged one is reused. The cache folder is the
caller's ``engine_dir``, else ``$TRT_EDGE_ENGINE_CACHE``, else the user's cache
folder (``$XDG_CACHE_HOME/trt_edge/engines`` or ``~/.cache/trt_edge/engines``),
never a folder shared by every user of the machine. Engines and sidecars are
written atomically by the builder, so two processes building the same key at
once both end with a complete engine.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import onnx

from ..artifacts import model_hash, save_onnx, to_jsonable
from .options import BuildOptions

log = logging.getLogger(__name__)


def default_engine_dir() -> Path:
    env = os.environ.get("TRT_EDGE_ENGINE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "trt_edge" / "engines"


def engine_key(model_sha256: str, options: BuildOptions) -> str:
    """``<model hash>-<precision>-<options hash>``: the same inputs give the same name."""
    opts = json.dumps(to_jsonable(options), sort_keys=True, separators=(",", ":"))
    return f"{model_sha256[:16]}-{options.precision}-{hashlib.sha256(opts.encode()).hexdigest()[:8]}"


def cached_engine(model: str | os.PathLike[str] | bytes | onnx.ModelProto,
                  options: BuildOptions | None = None,
                  engine_dir: str | os.PathLike[str] | None = None) -> Path:
    """The path of an engine built from ``model`` with ``options``; builds it if missing."""
    from .builder import build_engine

    bopts = options or BuildOptions()
    folder = Path(engine_dir) if engine_dir else default_engine_dir()
    if isinstance(model, (bytes, onnx.ModelProto)):
        proto = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(model)
        src = folder / f"model-{model_hash(proto)[:16]}.onnx"
        if not src.exists():
            save_onnx(proto, src)
        model = src
    plan = folder / f"{Path(model).stem}-{engine_key(model_hash(model), bopts)}.plan"
    if plan.exists():
        log.info("reusing engine %s", plan)
    else:
        build_engine(model, plan, bopts)
    return plan


__all__ = ["cached_engine", "default_engine_dir", "engine_key"]
