"""Resolve a torch module named on the command line.

Accepted forms:
- a built-in model: ``mobilenet_v2`` (ImageNet weights), ``minilm`` (sentence
  encoder), ``mnist_cnn`` (trained on the bundled digits for a few seconds);
- ``package.module:attr`` or ``path/to/file.py:attr`` where ``attr`` is an
  ``nn.Module`` instance or a zero-argument callable returning one;
- a TorchScript file (``.pt``/``.ts`` saved with ``torch.jit.save``).
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._lazy import require
from ..errors import InvalidInputError


@dataclasses.dataclass
class ResolvedModule:
    module: Any
    sample: dict[str, np.ndarray] | None  # default sample inputs (built-ins only)
    input_names: list[str] | None
    output_names: list[str] | None
    dynamic_axes: dict[str, dict[int, str]] | None


def _mnist() -> ResolvedModule:
    from ..data.mnist import load_mnist
    from ..models.mnist import train_mnist_cnn
    split = load_mnist()
    return ResolvedModule(train_mnist_cnn(split), {"input": split.x_test[:2]}, ["input"], ["logits"], None)


def _mobilenet() -> ResolvedModule:
    from ..data.images import imagenet_photos
    from ..models.mobilenetv2 import mobilenet_v2_imagenet
    return ResolvedModule(mobilenet_v2_imagenet(), {"input": imagenet_photos()[0][:2]}, ["input"], ["logits"],
                          None)


def _minilm() -> ResolvedModule:
    from ..models.minilm import load_minilm
    bundle = load_minilm()
    sample = bundle.tokenize(["A robot arm picks up the red cube.", "The path ahead is blocked."])
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "embeddings": {0: "batch"}}
    return ResolvedModule(bundle.module, sample, ["input_ids", "attention_mask"], ["embeddings"], axes)


BUILTINS: dict[str, Callable[[], ResolvedModule]] = {
    "mnist_cnn": _mnist, "mobilenet_v2": _mobilenet, "minilm": _minilm,
}


def resolve_module(spec: str) -> ResolvedModule:
    torch = require("torch", "exporting PyTorch models")
    if spec in BUILTINS:
        return BUILTINS[spec]()
    path = Path(spec)
    if path.suffix in (".pt", ".ts", ".pth") and ":" not in spec:
        if not path.exists():
            raise InvalidInputError(f"'{spec}' does not exist.")
        try:
            return ResolvedModule(torch.jit.load(str(path), map_location="cpu"), None, None, None, None)
        except Exception as exc:  # noqa: BLE001
            raise InvalidInputError(
                f"'{spec}' is not a TorchScript file ({exc}). A state_dict needs its model class: "
                "pass 'my_pkg.models:build' where build() creates the module and loads the weights.") from exc
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise InvalidInputError(
            f"Cannot resolve the module '{spec}'. Use a built-in ({', '.join(BUILTINS)}), "
            "'package.module:factory', 'file.py:factory' or a TorchScript .pt file.")
    if target.endswith(".py"):
        file = Path(target)
        if not file.exists():
            raise InvalidInputError(f"'{file}' does not exist.")
        mspec = importlib.util.spec_from_file_location(file.stem, file)
        assert mspec is not None and mspec.loader is not None
        mod = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(mod)
    else:
        try:
            mod = importlib.import_module(target)
        except ImportError as exc:
            raise InvalidInputError(f"Cannot import '{target}': {exc}. Is it on PYTHONPATH?") from exc
    obj = getattr(mod, attr, None)
    if obj is None:
        raise InvalidInputError(f"'{target}' has no attribute '{attr}'.")
    if not isinstance(obj, torch.nn.Module):
        obj = obj() if callable(obj) else obj
    if not isinstance(obj, torch.nn.Module):
        raise InvalidInputError(f"'{spec}' gave a {type(obj).__name__}, not a torch.nn.Module.")
    return ResolvedModule(obj, None, None, None, None)
