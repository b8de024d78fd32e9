"""LiteRT (TensorFlow Lite) runner: the peer CPU backend for .tflite models.

Runs a .tflite file with LiteRT's interpreter (``ai-edge-litert``), with its
XNNPACK delegate by default (what LiteRT uses on ARM and x86 CPUs) and a chosen
number of threads. One interpreter is not thread-safe, so calls are serialised
by the base class; for concurrency open one runner per instance (``Model.load``
does that for runners that are not thread-safe).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._lazy import require
from ..errors import InvalidInputError, RunnerError
from ..onnx_io import TensorSpec
from .base import Runner

TFLITE_SUFFIXES = (".tflite",)


@dataclasses.dataclass(frozen=True)
class LiteRTOptions:
    """``num_threads``: CPU threads of the interpreter (and of XNNPACK); ``xnnpack``: use
    LiteRT's default delegate (XNNPACK) — off runs the builtin reference/optimized kernels,
    which cannot run MediaPipe's ``Convolution2DTransposeBias`` (XNNPACK implements it)."""

    num_threads: int = 1
    xnnpack: bool = True

    def __post_init__(self) -> None:
        if self.num_threads < 1:
            raise InvalidInputError(f"num_threads must be >= 1, got {self.num_threads}.")


class LiteRTRunner(Runner):
    """Runs a .tflite model (path or bytes) with LiteRT's interpreter."""

    backend = "litert"
    thread_safe = False

    def __init__(self, model: str | os.PathLike[str] | bytes, options: LiteRTOptions | None = None,
                 name: str | None = None) -> None:
        super().__init__(name or (Path(model).name if isinstance(model, (str, os.PathLike)) else "tflite"))
        self.model = model
        self.options = options or LiteRTOptions()
        self.interpreter: Any = None
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        self._in_details: list[dict[str, Any]] = []
        self._out_details: list[dict[str, Any]] = []

    def activate_impl(self) -> None:
        lite = require("ai_edge_litert.interpreter", "running .tflite models with LiteRT")
        kwargs: dict[str, Any] = {"num_threads": self.options.num_threads,
                                  "experimental_op_resolver_type": lite.OpResolverType.AUTO if self.options.xnnpack
                                  else lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
        if isinstance(self.model, (bytes, bytearray)):
            kwargs["model_content"] = bytes(self.model)
        else:
            path = Path(self.model)
            if not path.is_file():
                raise InvalidInputError(f"TFLite model '{path}' does not exist or is not a file.")
            kwargs["model_path"] = str(path)
        try:
            interp = lite.Interpreter(**kwargs)
            interp.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise RunnerError(f"LiteRT cannot load '{self.name}': {str(exc).strip().splitlines()[0]}. Custom "
                              "ops need their registration (MediaPipe's own ops are not part of LiteRT); "
                              "with xnnpack=False, XNNPACK-only ops such as Convolution2DTransposeBias "
                              "fail too.") from exc
        self.interpreter = interp
        self._in_details = interp.get_input_details()
        self._out_details = interp.get_output_details()
        self._inputs = [self._spec(d) for d in self._in_details]
        self._outputs = [self._spec(d) for d in self._out_details]

    @staticmethod
    def _spec(d: dict[str, Any]) -> TensorSpec:
        shape = tuple(int(v) for v in d["shape"])
        sig = tuple(int(v) for v in d.get("shape_signature", d["shape"]))
        dims = tuple(s if g >= 0 else shape[i] for i, (s, g) in enumerate(zip(shape, sig)))
        return TensorSpec(d["name"], dims, np.dtype(d["dtype"]))

    def deactivate_impl(self) -> None:
        self.interpreter = None

    def input_specs_impl(self) -> list[TensorSpec]:
        return list(self._inputs)

    def output_specs_impl(self) -> list[TensorSpec]:
        return list(self._outputs)

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        interp = self.interpreter
        if interp is None:
            raise RunnerError(f"Runner '{self.name}' was deactivated while an inference was starting.")
        try:
            for d in self._in_details:
                interp.set_tensor(d["index"], feed[d["name"]])
            interp.invoke()
            # get_tensor returns a copy: the caller owns it, the next invoke cannot overwrite it.
            return {d["name"]: interp.get_tensor(d["index"]) for d in self._out_details}
        except (RuntimeError, ValueError) as exc:
            raise RunnerError(f"LiteRT inference failed in '{self.name}': {exc}") from exc

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        try:
            import importlib.metadata
            info["ai_edge_litert"] = importlib.metadata.version("ai-edge-litert")
        except Exception:  # noqa: BLE001 - metadata is best effort
            pass
        info.update({"num_threads": self.options.num_threads, "xnnpack": self.options.xnnpack})
        return info


__all__ = ["LiteRTRunner", "LiteRTOptions", "TFLITE_SUFFIXES"]
