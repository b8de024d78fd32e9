"""Open the right runner for an artifact.

``open_runner("model.onnx")`` gives an :class:`OnnxRuntimeRunner` (the embedded
default); ``open_runner("engines/m.plan")`` gives the TensorRT runner from
``trt_edge.runtime.tensorrt``, imported only then, so this module (and
``bench``/``compare``/``eval`` on top of it) works on machines without TensorRT.
"""
from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

import onnx

from ..errors import InvalidInputError, MissingDependencyError
from .base import Runner
from .onnxrt import OnnxRuntimeRunner, OrtOptions

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "tensorrt")
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")

Artifact = str | os.PathLike[str] | bytes | onnx.ModelProto


def tensorrt_available() -> bool:
    """True if a usable TensorRT Python package imports.

    ``tensorrt-stubs`` installs an empty ``tensorrt`` namespace package, so a bare
    ``import tensorrt`` proves nothing: a real installation has ``Builder`` and ``Runtime``.
    """
    try:
        trt = importlib.import_module("tensorrt")
    except Exception:  # noqa: BLE001 - any failure means "not usable"
        return False
    return hasattr(trt, "Builder") and hasattr(trt, "Runtime")


def _tensorrt_runner_class() -> Any:
    if not tensorrt_available():
        raise MissingDependencyError(
            "TensorRT is not installed, so TensorRT engines (.plan/.engine) cannot run here. Install "
            "it with: pip install 'trt-edge[tensorrt]' on a machine with an NVIDIA GPU (on Jetson it "
            "comes with JetPack), or run the ONNX model instead with the ONNX Runtime backend "
            "(--backend onnxruntime).")
    try:
        module = importlib.import_module("trt_edge.runtime.tensorrt")
    except ImportError as exc:
        raise MissingDependencyError(
            f"The TensorRT runner could not be imported ({exc}). Install its dependencies with: "
            "pip install 'trt-edge[tensorrt]'.") from exc
    return module.TensorRTRunner


def artifact_kind(artifact: Artifact) -> str:
    """"onnx" or "engine", from the value's type or the file suffix.

    Unknown suffixes are sniffed: a file that parses as an ONNX ModelProto is ONNX.
    """
    if isinstance(artifact, (onnx.ModelProto, bytes)):
        return "onnx"
    path = Path(artifact)
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    if not path.exists():
        raise InvalidInputError(f"Artifact '{path}' does not exist. Give an .onnx model or a TensorRT "
                                f"engine ({', '.join(ENGINE_SUFFIXES)}).")
    try:
        onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not protobuf: not ONNX
        raise InvalidInputError(
            f"Cannot tell what '{path}' is from its suffix '{suffix}': name ONNX models *.onnx and "
            f"TensorRT engines {'/'.join('*' + s for s in ENGINE_SUFFIXES)}.") from None
    return "onnx"


def open_runner(artifact: Artifact | Runner, backend: str = "auto", *,
                ort_options: OrtOptions | None = None, trt_options: Any = None,
                prefer_tensorrt: bool = False, name: str | None = None) -> Runner:
    """Make an (inactive) runner for ``artifact``; use it as a context manager.

    - ONNX (path, bytes, ModelProto) -> :class:`OnnxRuntimeRunner` with ``ort_options``.
    - TensorRT engine (.plan/.engine/.trt) -> ``TensorRTRunner(path, trt_options)``;
      raises :class:`MissingDependencyError` with a fix when TensorRT is missing.
    - ``backend="auto"`` runs ONNX in ONNX Runtime unless ``prefer_tensorrt`` is set
      *and* TensorRT is installed, in which case the ONNX model is built into an
      engine once (``trt_edge.build.engine_cache``, reused while model and options
      are unchanged) and run with TensorRT; ``backend="tensorrt"`` demands that
      and fails clearly otherwise.
    - A :class:`Runner` passes through unchanged (so APIs can take either).
    """
    if isinstance(artifact, Runner):
        return artifact
    if isinstance(artifact, (str, os.PathLike)) and Path(artifact).suffix.lower() == ".tflite":
        # A TFLite model runs with LiteRT (imported only now); import it to ONNX for the others.
        if backend not in ("auto", "litert"):
            raise InvalidInputError(f"'{artifact}' is a TFLite model, which runs with LiteRT only: convert it "
                                    "with `trt-edge import MODEL.tflite -o MODEL.onnx` to use "
                                    f"--backend {backend}.")
        from .litert import LiteRTOptions, LiteRTRunner
        threads = ort_options.intra_op_threads if ort_options is not None else 0  # 0: LiteRT's 1 thread
        return LiteRTRunner(artifact, LiteRTOptions(num_threads=threads) if threads > 0 else None, name=name)
    if backend not in BACKENDS:
        raise InvalidInputError(f"Unknown backend '{backend}': choose one of {', '.join(BACKENDS)}.")
    kind = artifact_kind(artifact)
    if kind == "engine":
        engine = Path(artifact)  # type: ignore[arg-type]  # engines are always files
        if backend == "onnxruntime":
            raise InvalidInputError(
                f"'{engine}' is a TensorRT engine; ONNX Runtime cannot run it. Use --backend tensorrt "
                "(or auto), or give the .onnx model it was built from.")
        if not engine.exists():
            raise InvalidInputError(f"Engine '{engine}' does not exist. Build it with `trt-edge build`.")
        cls = _tensorrt_runner_class()
        return cls(engine, trt_options) if trt_options is not None else cls(engine)
    want_trt = backend == "tensorrt" or (backend == "auto" and prefer_tensorrt)
    if want_trt:
        if backend == "auto" and not tensorrt_available():
            log.info("TensorRT is not installed; running the ONNX model with ONNX Runtime.")
        else:
            cls = _tensorrt_runner_class()
            from ..build.engine_cache import cached_engine  # builds once per model + options

            plan = cached_engine(artifact)  # type: ignore[arg-type]
            return cls(plan, trt_options) if trt_options is not None else cls(plan)
    return OnnxRuntimeRunner(artifact, ort_options, name=name)  # type: ignore[arg-type]


__all__ = ["open_runner", "artifact_kind", "tensorrt_available", "BACKENDS", "ENGINE_SUFFIXES"]
