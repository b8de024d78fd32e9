"""Unstructured magnitude pruning with gradual schedules, on top of :mod:`.pruning`.

:func:`trt_edge.compress.pruning.prune_module` zeroes weights once (layer-wise or global
threshold); here the sparsity grows during fine-tuning along the cubic schedule of Zhu & Gupta
(2017), ``s_t = s_f + (s_i - s_f) (1 - t / n)^3``, and the masks are held fixed between
pruning steps, so fine-tuning recovers what each step removed.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable

import numpy as np

from .._lazy import require
from ..errors import InvalidInputError
from ._train import TrainOptions, fine_tune
from .pruning import PruneOptions, PrunedLayer, prune_module

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GradualSchedule:
    """``final_sparsity`` reached after ``steps`` pruning steps, starting from ``initial_sparsity``."""

    final_sparsity: float = 0.8
    initial_sparsity: float = 0.0
    steps: int = 4

    def __post_init__(self) -> None:
        if not 0.0 <= self.initial_sparsity <= self.final_sparsity < 1.0 or self.steps < 1:
            raise InvalidInputError(f"need 0 <= initial <= final < 1 and steps >= 1, got {self}.")

    def sparsity_at(self, step: int) -> float:
        """Target sparsity after pruning step ``step`` (1-based)."""
        t = min(max(step, 0), self.steps) / self.steps
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - t) ** 3


def weight_masks(model: Any, layer_types: Iterable[str] = ("Linear", "Conv2d")) -> dict[str, np.ndarray]:
    """Current non-zero masks of the weights of ``layer_types`` modules."""
    return {n: (m.weight.detach().cpu().numpy() != 0) for n, m in model.named_modules()
            if type(m).__name__ in tuple(layer_types) and getattr(m, "weight", None) is not None}


def prune_gradual(model: Any, loader: Any, schedule: GradualSchedule = GradualSchedule(),
                  prune: PruneOptions = PruneOptions(scope="global", layer_types=("Linear", "Conv2d"),
                                                     min_elements=256),
                  train: TrainOptions = TrainOptions()) -> list[list[PrunedLayer]]:
    """Prune ``model`` in place in ``schedule.steps`` steps, fine-tuning ``train.epochs`` epochs
    after each with the zeros held fixed. Returns each step's per-layer report."""
    from .sparsity24 import MaskKeeper
    require("torch", "pruning")
    reports = []
    for step in range(1, schedule.steps + 1):
        target = schedule.sparsity_at(step)
        reports.append(prune_module(model, dataclasses.replace(prune, sparsity=target)))
        keeper = MaskKeeper(model, weight_masks(model, prune.layer_types))
        loss = fine_tune(model, loader, train, after_step=keeper)
        log.info("gradual pruning step %d/%d: sparsity %.3f, fine-tune loss %.4f", step, schedule.steps,
                 target, loss)
    return reports
