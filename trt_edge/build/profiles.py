"""Optimization profiles from ``--shapes`` text.

Syntax (one ``--shapes`` argument = one optimization profile)::

    input:1x3x224x224/4x3x224x224/8x3x224x224      min/opt/max for one input
    ids:1x16/1x128/4x256,mask:1x16/1x128/4x256      several inputs, comma separated
    input:8x3x224x224                               fixed shape (min = opt = max)

Repeat ``--shapes`` for several profiles (e.g. one for batch 1 at low latency,
one for batch 32). The parsing and the checks are pure Python so they are
tested on every machine.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Iterable, Mapping, Sequence

from ..errors import InvalidInputError
from ..onnx_io import TensorSpec

Shape = tuple[int, ...]
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ShapeRange:
    """min <= opt <= max, per dimension, same rank."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise InvalidInputError(
                f"Shape range {self.describe()} mixes ranks: min, opt and max need the same number "
                "of dimensions.")
        for axis, (lo, mid, hi) in enumerate(zip(self.min, self.opt, self.max)):
            if lo < 0 or not lo <= mid <= hi:
                raise InvalidInputError(
                    f"Shape range {self.describe()} is not ordered on axis {axis}: need "
                    f"0 <= min ({lo}) <= opt ({mid}) <= max ({hi}).")

    @classmethod
    def fixed(cls, shape: Sequence[int]) -> "ShapeRange":
        s = tuple(int(d) for d in shape)
        return cls(s, s, s)

    @property
    def is_fixed(self) -> bool:
        return self.min == self.opt == self.max

    def describe(self) -> str:
        fmt = lambda s: "x".join(str(d) for d in s)  # noqa: E731
        return f"{fmt(self.min)}/{fmt(self.opt)}/{fmt(self.max)}"


@dataclasses.dataclass(frozen=True)
class ProfileSpec:
    """One optimization profile: input name -> ShapeRange."""

    shapes: Mapping[str, ShapeRange]

    def describe(self) -> str:
        return ",".join(f"{n}:{r.describe()}" for n, r in self.shapes.items())

    def to_json(self) -> dict[str, dict[str, list[int]]]:
        return {n: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)}
                for n, r in self.shapes.items()}


def _dims(text: str, where: str) -> Shape:
    try:
        dims = tuple(int(d) for d in text.strip().lower().split("x"))
    except ValueError as exc:
        raise InvalidInputError(f"Bad shape '{text}' in '{where}': dimensions are integers joined by "
                                "'x', e.g. 1x3x224x224.") from exc
    return dims


def parse_profile(text: str) -> ProfileSpec:
    """Parse one profile: ``name:MIN/OPT/MAX[,name2:...]`` or ``name:SHAPE``."""
    shapes: dict[str, ShapeRange] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, ranges = part.rpartition(":")
        if not sep or not name:
            raise InvalidInputError(f"Bad profile entry '{part}': write NAME:MIN/OPT/MAX, e.g. "
                                    "input:1x3x224x224/8x3x224x224/16x3x224x224.")
        pieces = ranges.split("/")
        if len(pieces) == 1:
            rng = ShapeRange.fixed(_dims(pieces[0], part))
        elif len(pieces) == 3:
            rng = ShapeRange(*(_dims(p, part) for p in pieces))
        else:
            raise InvalidInputError(f"Bad profile entry '{part}': give one shape or three "
                                    "(min/opt/max), separated by '/'.")
        if name in shapes:
            raise InvalidInputError(f"Input '{name}' appears twice in profile '{text}'.")
        shapes[name] = rng
    if not shapes:
        raise InvalidInputError("Empty --shapes profile: write NAME:MIN/OPT/MAX.")
    return ProfileSpec(shapes)


def parse_profiles(texts: Iterable[str] | str | None) -> list[ProfileSpec]:
    if texts is None:
        return []
    if isinstance(texts, str):
        texts = [texts]
    return [parse_profile(t) for t in texts]


def default_batch_profile(inputs: Sequence[TensorSpec], batch: tuple[int, int, int]) -> ProfileSpec | None:
    """min/opt/max = ``batch`` on axis 0 for inputs whose *only* dynamic axis is the batch.

    None when some input has another dynamic axis (sequence length, image size):
    those need explicit ``--shapes``.
    """
    shapes: dict[str, ShapeRange] = {}
    for spec in inputs:
        if spec.shape is None:
            return None
        dims = list(spec.shape)
        fixed = [d if isinstance(d, int) and d >= 0 else None for d in dims]
        if any(d is None for d in fixed[1:]):
            return None
        if fixed and fixed[0] is None:
            rest = [int(d) for d in fixed[1:]]  # type: ignore[arg-type]
            shapes[spec.name] = ShapeRange((batch[0], *rest), (batch[1], *rest), (batch[2], *rest))
    return ProfileSpec(shapes) if shapes else None


def resolve_profiles(profiles: Sequence[ProfileSpec], inputs: Sequence[TensorSpec],
                     default_batch: tuple[int, int, int] | None = None) -> list[ProfileSpec]:
    """Complete and check profiles against the model's inputs.

    Guarantees: every returned profile names every model input exactly once;
    fixed model dims agree with every range; a dynamic input without a range is
    an error that names it (TensorRT would fail later with a less clear one).
    With no profiles and a fully static model, returns one fixed profile. With no
    profiles, ``default_batch`` and only dynamic *batch* axes, the batch axis
    gets that min/opt/max (logged, so the choice is visible).
    """
    by_name = {s.name: s for s in inputs}
    if not profiles:
        auto = default_batch_profile(inputs, default_batch) if default_batch else None
        if auto is not None:
            log.warning("no --shapes given: dynamic batch axes get min/opt/max %s (%s); pass --shapes "
                        "to choose other ranges", "/".join(map(str, default_batch or ())), auto.describe())
        profiles = [auto or ProfileSpec({})]
    out: list[ProfileSpec] = []
    for idx, prof in enumerate(profiles):
        unknown = sorted(set(prof.shapes) - set(by_name))
        if unknown:
            raise InvalidInputError(
                f"Profile {idx} names {unknown}, which are not model inputs; inputs are "
                + ", ".join(s.describe() for s in inputs) + ".")
        shapes: dict[str, ShapeRange] = {}
        for spec in inputs:
            rng = prof.shapes.get(spec.name)
            if rng is None:
                if spec.shape is None or spec.is_dynamic:
                    raise InvalidInputError(
                        f"Input {spec.describe()} has dynamic dimensions: give its range with "
                        f"--shapes {spec.name}:MIN/OPT/MAX (e.g. "
                        f"{spec.name}:{_example(spec, 1)}/{_example(spec, 8)}/{_example(spec, 32)}).")
                rng = ShapeRange.fixed([int(d) for d in spec.shape])  # type: ignore[arg-type]
            elif spec.shape is not None:
                if len(spec.shape) != len(rng.min):
                    raise InvalidInputError(
                        f"Profile {idx}: input {spec.describe()} has rank {len(spec.shape)} but the "
                        f"range {rng.describe()} has rank {len(rng.min)}.")
                for axis, want in enumerate(spec.shape):
                    if isinstance(want, int) and want >= 0 and not (
                            rng.min[axis] == rng.opt[axis] == rng.max[axis] == want):
                        raise InvalidInputError(
                            f"Profile {idx}: input {spec.describe()} is fixed at {want} on axis "
                            f"{axis}, but the range {rng.describe()} varies it.")
            shapes[spec.name] = rng
        out.append(ProfileSpec(shapes))
    return out


def _example(spec: TensorSpec, batch: int) -> str:
    dims = [d if isinstance(d, int) and d >= 0 else None for d in (spec.shape or ())]
    filled = [str(d) if d is not None else (str(batch) if i == 0 else "N") for i, d in enumerate(dims)]
    return "x".join(filled) or "N"
