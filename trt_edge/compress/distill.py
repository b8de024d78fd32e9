"""Knowledge distillation: teacher -> student with temperature-scaled KL plus the task loss.

``loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
       + (1 - alpha) * task_loss(student, y)
       + beta * sum_i MSE(proj_i(student_feature_i), teacher_feature_i)``

(Hinton et al. 2015; the ``T^2`` keeps the soft-target gradients on the scale of the hard
ones). Feature matching is optional: name pairs of modules (student, teacher); their outputs
are captured with forward hooks and a learned 1x1 projection (conv for 4-D features, linear for
2-D) maps the student's channels onto the teacher's. Works with any torch DataLoader yielding
``(x, y)`` (``y`` unused when ``alpha == 1``); deterministic for a seed (see ``_train``).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Sequence

from .._lazy import require
from ..errors import InvalidInputError
from ._train import TrainOptions, train

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DistillOptions:
    """``temperature``: softening T. ``alpha``: weight of the KL term (1 - alpha: task loss).
    ``features``: (student module, teacher module) name pairs to match; ``beta``: their weight."""

    temperature: float = 4.0
    alpha: float = 0.7
    features: Sequence[tuple[str, str]] = ()
    beta: float = 1.0
    train: TrainOptions = TrainOptions(epochs=3, lr=2e-3)

    def __post_init__(self) -> None:
        if self.temperature <= 0 or not 0.0 <= self.alpha <= 1.0 or self.beta < 0:
            raise InvalidInputError(f"need temperature > 0, 0 <= alpha <= 1, beta >= 0 (got {self}).")


def kd_loss(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """``T^2 * KL(p_teacher || p_student)`` at temperature T, batch mean."""
    torch = require("torch")
    f = torch.nn.functional
    t = temperature
    return f.kl_div(f.log_softmax(student_logits / t, dim=1), f.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)


class _Capture:
    def __init__(self, module: Any):
        self.value = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, mod: Any, inputs: Any, output: Any) -> None:
        self.value = output

    def remove(self) -> None:
        self.handle.remove()


def _projection(student_feat: Any, teacher_feat: Any) -> Any:
    torch = require("torch")
    cs, ct = student_feat.shape[1], teacher_feat.shape[1]
    if student_feat.shape == teacher_feat.shape:
        # Same channels (e.g. a block output that pruning kept aligned): compare directly; a
        # randomly initialised 1x1 projection would first have to learn the identity.
        return torch.nn.Identity()
    if student_feat.ndim == 4:
        return torch.nn.Conv2d(cs, ct, 1, bias=False)
    if student_feat.ndim == 2:
        return torch.nn.Linear(cs, ct, bias=False)
    raise InvalidInputError(f"feature matching supports 2-D and 4-D features, got {tuple(student_feat.shape)}.")


def distill(teacher: Any, student: Any, loader: Any, options: DistillOptions = DistillOptions(),
            task_loss: Callable[[Any, Any], Any] | None = None, sample: Any = None) -> float:
    """Train ``student`` (in place) to mimic ``teacher`` on ``loader``; returns the last epoch's
    mean loss. ``task_loss(logits, y)`` defaults to cross-entropy. ``sample``: one input batch,
    needed only to size the feature projections (the first loader batch otherwise)."""
    torch = require("torch", "distillation")
    task_loss = task_loss or torch.nn.functional.cross_entropy
    s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
    for s, t in options.features:
        if s not in s_mods or t not in t_mods:
            raise InvalidInputError(f"feature pair ({s!r}, {t!r}) does not name a student and a teacher module.")
    teacher_mode = teacher.training
    teacher.eval()
    grads = [(p, p.requires_grad) for p in teacher.parameters()]
    for p, _ in grads:
        p.requires_grad_(False)
    caps = [(_Capture(s_mods[s]), _Capture(t_mods[t])) for s, t in options.features]
    projections = torch.nn.ModuleList()
    try:
        if caps:
            if sample is None:
                sample = next(iter(loader))[0]
            with torch.no_grad():
                student.eval()
                student(sample)
                teacher(sample)
            torch.manual_seed(options.train.seed)
            projections.extend(_projection(cs.value, ct.value) for cs, ct in caps)

        def loss_fn(model: Any, x: Any, y: Any) -> Any:
            with torch.no_grad():
                t_logits = teacher(x)
            s_logits = model(x)
            loss = options.alpha * kd_loss(s_logits, t_logits, options.temperature)
            if options.alpha < 1.0:
                loss = loss + (1.0 - options.alpha) * task_loss(s_logits, y)
            for proj, (cs, ct) in zip(projections, caps):
                loss = loss + options.beta * torch.nn.functional.mse_loss(proj(cs.value), ct.value)
            return loss

        params = list(student.parameters()) + list(projections.parameters())
        last = train(student, loader, loss_fn, options.train, parameters=params, description="distilling")
    finally:
        for cs, ct in caps:
            cs.remove()
            ct.remove()
        for p, flag in grads:   # the teacher is the caller's model: leave it as it was
            p.requires_grad_(flag)
        teacher.train(teacher_mode)
    log.info("distilled %s -> %s, last loss %.4f", type(teacher).__name__, type(student).__name__, last)
    return last
