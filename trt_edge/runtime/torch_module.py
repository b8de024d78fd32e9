"""A torch ``nn.Module`` behind the Runner interface (the reference in ``compare``).

A module has no declared inputs, so the specs come from the caller (usually the
ONNX model it was exported to): the runner then validates feeds exactly as the
ONNX runner does, and ``compare`` can treat torch and ONNX alike. torch is
imported on activation only.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .._lazy import require
from ..errors import InvalidInputError, RunnerError
from ..onnx_io import TensorSpec
from .base import Runner

log = logging.getLogger(__name__)


class TorchModuleRunner(Runner):
    """Runs ``module(*inputs)`` in eval mode under ``torch.inference_mode`` on the CPU.

    ``input_specs`` give the positional order of the module's arguments.
    ``output_names`` name the module's outputs in order (a tensor, a tuple/list of
    tensors, or a dict, whose keys are used when ``output_names`` is None).
    Not thread-safe: torch modules may keep state, so calls are serialised.
    """

    backend = "torch"
    thread_safe = False

    def __init__(self, module: Any, input_specs: Sequence[TensorSpec],
                 output_names: Sequence[str] | None = None, name: str | None = None) -> None:
        super().__init__(name or f"torch:{type(module).__name__}")
        if not callable(module):
            raise InvalidInputError(f"Expected a torch.nn.Module (or callable), got {type(module).__name__}.")
        if not input_specs:
            raise InvalidInputError("TorchModuleRunner needs the input specs (names, dtypes, shapes) of the "
                                    "module's arguments, e.g. from the ONNX model it was exported to.")
        self.module = module
        self._inputs = list(input_specs)
        self._output_names = list(output_names) if output_names is not None else None
        self._torch: Any = None

    def activate_impl(self) -> None:
        self._torch = require("torch", "running a torch module as a reference")
        if hasattr(self.module, "eval"):
            self.module.eval()

    def deactivate_impl(self) -> None:
        self._torch = None

    def input_specs_impl(self) -> list[TensorSpec]:
        return list(self._inputs)

    def output_specs_impl(self) -> list[TensorSpec]:
        names = self._output_names or ["output"]
        return [TensorSpec(n, None, np.dtype(np.float32)) for n in names]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        args = [torch.from_numpy(np.ascontiguousarray(feed[s.name])) for s in self._inputs]
        try:
            with torch.inference_mode():
                result = self.module(*args)
        except Exception as exc:  # noqa: BLE001 - any module error
            raise RunnerError(f"The torch module '{self.name}' failed: {exc}") from exc
        return self._name_outputs(result)

    def _name_outputs(self, result: Any) -> dict[str, np.ndarray]:
        torch = self._torch
        if isinstance(result, Mapping):
            items = list(result.items())
            if self._output_names is not None:
                if len(items) != len(self._output_names):
                    raise RunnerError(f"The module returned {len(items)} outputs but {len(self._output_names)} "
                                      f"names were given ({self._output_names}).")
                items = list(zip(self._output_names, [v for _, v in items]))
        else:
            values = list(result) if isinstance(result, (tuple, list)) else [result]
            names = self._output_names or [f"output_{i}" if len(values) > 1 else "output"
                                           for i in range(len(values))]
            if len(values) != len(names):
                raise RunnerError(f"The module returned {len(values)} outputs but {len(names)} names "
                                  f"were given ({names}).")
            items = list(zip(names, values))
        out: dict[str, np.ndarray] = {}
        for name, value in items:
            if isinstance(value, torch.Tensor):
                out[str(name)] = value.detach().cpu().numpy().copy()
            else:
                out[str(name)] = np.asarray(value)
        return out

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        try:
            info["torch"] = require("torch").__version__
        except Exception:  # noqa: BLE001 - describe never fails
            pass
        info["module"] = type(self.module).__qualname__
        return info


def load_torch_factory(spec: str) -> Any:
    """Call ``package.module:factory`` (or ``path/to/file.py:factory``) and return its module.

    The factory takes no arguments and returns a ``torch.nn.Module`` (with its
    weights loaded). This is how ``trt-edge compare --torch`` gets the reference.
    """
    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise InvalidInputError(f"Bad --torch value '{spec}': write package.module:factory_function "
                                "(or path/to/file.py:factory_function).")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.exists():
                raise InvalidInputError(f"Python file '{path}' (from --torch) does not exist.")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            if module_spec is None or module_spec.loader is None:
                raise InvalidInputError(f"Cannot import '{path}' as a Python module.")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[path.stem] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise InvalidInputError(f"Cannot import '{mod_name}' (from --torch {spec}): {exc}. Is it on "
                                "PYTHONPATH?") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise InvalidInputError(f"'{mod_name}' has no callable '{attr}' (from --torch {spec}).")
    built = factory()
    if not callable(built):
        raise InvalidInputError(f"{spec}() returned {type(built).__name__}, not a torch.nn.Module.")
    return built


__all__ = ["TorchModuleRunner", "load_torch_factory"]
