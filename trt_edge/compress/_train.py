"""Shared training plumbing for the compression steps: determinism, loops, evaluation.

Every compression step that trains (fine-tuning, distillation, codebook and QAT training) runs
through :func:`train` so that a given seed gives the same model on any x86-64 machine:
``torch.use_deterministic_algorithms(True)``, a fixed intra-op thread count and seeded
generators (TESTING.md).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .._lazy import require
from ..errors import InvalidInputError
from ..log import progress

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """``epochs``/``lr``/``weight_decay``: AdamW settings. ``max_steps``: stop after this many
    optimizer steps (None: all epochs). ``seed``/``threads``: determinism (see module doc).
    ``freeze_bn``: keep BatchNorm layers in eval mode (running statistics fixed) while training:
    for short runs on little data, where batch statistics would be noise."""

    epochs: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_steps: int | None = None
    seed: int = 0
    threads: int = 1
    freeze_bn: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.lr <= 0 or self.threads < 1:
            raise InvalidInputError(f"epochs must be >= 0, lr > 0 and threads >= 1 (got {self}).")


@contextlib.contextmanager
def deterministic(seed: int = 0, threads: int = 1) -> Iterator[None]:
    """Seeded, deterministic torch for the duration of the block (settings restored after)."""
    torch = require("torch", "compression")
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def array_loader(x: np.ndarray, y: np.ndarray, batch_size: int = 64, seed: int = 0,
                 shuffle: bool = True) -> Any:
    """A seeded torch DataLoader over arrays (the compression tests and recipes use it)."""
    torch = require("torch", "compression")
    ds = torch.utils.data.TensorDataset(torch.from_numpy(np.ascontiguousarray(x)),
                                        torch.from_numpy(np.ascontiguousarray(y)))
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle,
                                       generator=torch.Generator().manual_seed(seed))


def train(model: Any, loader: Iterable[Any], loss_fn: Callable[[Any, Any, Any], Any],
          options: TrainOptions = TrainOptions(), after_step: Callable[[], None] | None = None,
          parameters: Iterable[Any] | None = None, description: str = "training") -> float:
    """Run AdamW over ``loader`` batches ``(x, y)``; ``loss_fn(model, x, y)`` returns the loss.

    ``after_step`` runs after every optimizer step (pruning masks, codebook projection).
    Returns the mean loss of the last epoch. The model is left in eval mode. A DataLoader's
    ``generator`` is re-seeded with ``options.seed``, so a run is repeatable.
    """
    torch = require("torch", "compression")
    params = [p for p in (parameters if parameters is not None else model.parameters()) if p.requires_grad]
    last = float("nan")
    with deterministic(options.seed, options.threads):
        gen = getattr(loader, "generator", None)
        if isinstance(gen, torch.Generator):
            gen.manual_seed(options.seed)  # the same batches for the same seed, run after run
        opt = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
        steps = 0
        model.train()
        if options.freeze_bn:
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        for epoch in range(options.epochs):
            total, n = 0.0, 0
            for x, y in progress(loader, description=f"{description} epoch {epoch + 1}/{options.epochs}"):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model, x, y)
                loss.backward()
                opt.step()
                if after_step is not None:
                    after_step()
                total += float(loss.detach())
                n += 1
                steps += 1
                if options.max_steps is not None and steps >= options.max_steps:
                    break
            last = total / max(n, 1)
            log.debug("%s epoch %d: loss %.4f", description, epoch + 1, last)
            if options.max_steps is not None and steps >= options.max_steps:
                break
        model.eval()
    return last


def cross_entropy(model: Any, x: Any, y: Any) -> Any:
    torch = require("torch", "compression")
    return torch.nn.functional.cross_entropy(model(x), y)


def fine_tune(model: Any, loader: Iterable[Any], options: TrainOptions = TrainOptions(),
              after_step: Callable[[], None] | None = None) -> float:
    """Cross-entropy fine-tuning (classification)."""
    return train(model, loader, cross_entropy, options, after_step, description="fine-tuning")


def predict(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Model outputs on ``x`` (NumPy in, NumPy out, eval mode, no grad)."""
    torch = require("torch", "compression")
    was = model.training
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size]))).numpy())
    model.train(was)
    return np.concatenate(outs)


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``, in [0, 1]."""
    return float(np.mean(np.argmax(predict(model, x), axis=1) == y))


def agreement(model: Any, reference: Any, x: np.ndarray) -> float:
    """Fraction of ``x`` where ``model`` and ``reference`` give the same top-1 class."""
    return float(np.mean(np.argmax(predict(model, x), 1) == np.argmax(predict(reference, x), 1)))
