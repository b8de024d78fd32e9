"""Buffer planning for the TensorRT runtime (pure Python/NumPy, tested on every machine).

How many bytes each engine tensor needs at the largest shape the optimization
profile allows, aligned the way TensorRT wants, so that an execution instance
allocates its buffers once and reuses them for every call. The bytes of one
instance (``BufferPlan.total_device_bytes``) times the number of instances is
the I/O memory of a loaded model.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from ..errors import InvalidInputError

#: TensorRT requires 256-byte aligned I/O addresses for some formats; cudaMalloc
#: returns 256-byte aligned memory, and we keep every slot a multiple of it.
TENSOR_ALIGNMENT = 256


def volume(shape: Sequence[int]) -> int:
    """Number of elements; raises on negative (still dynamic) dimensions."""
    if any(int(d) < 0 for d in shape):
        raise InvalidInputError(f"Shape {tuple(shape)} still has dynamic (-1) dimensions: set the "
                                "input shapes first.")
    return int(math.prod(int(d) for d in shape))


def align_up(n: int, alignment: int = TENSOR_ALIGNMENT) -> int:
    if alignment <= 0 or alignment & (alignment - 1):
        raise InvalidInputError(f"alignment must be a power of two, got {alignment}.")
    return (n + alignment - 1) & ~(alignment - 1)


def max_shape(shapes: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Element-wise maximum of same-rank shapes (e.g. an output's shape at each profile's max)."""
    if not shapes:
        raise InvalidInputError("max_shape needs at least one shape.")
    ranks = {len(s) for s in shapes}
    if len(ranks) != 1:
        raise InvalidInputError(f"Shapes of different ranks cannot be combined: {list(shapes)}.")
    return tuple(int(max(dims)) for dims in zip(*shapes))


@dataclasses.dataclass(frozen=True)
class TensorBinding:
    """One engine I/O tensor as the planner sees it.

    max_shape: the largest shape this tensor takes over every optimization
        profile; None for an output whose shape depends on the data (planned
        by an output allocator at run time instead).
    """

    name: str
    dtype: np.dtype
    is_input: bool
    max_shape: tuple[int, ...] | None

    @property
    def data_dependent(self) -> bool:
        return self.max_shape is None


@dataclasses.dataclass(frozen=True)
class BufferPlan:
    """Bytes per tensor (aligned), computed once per engine and reused for every inference."""

    bindings: Mapping[str, TensorBinding]
    nbytes: Mapping[str, int]
    alignment: int = TENSOR_ALIGNMENT

    @property
    def total_device_bytes(self) -> int:
        return int(sum(self.nbytes.values()))

    @property
    def data_dependent_outputs(self) -> list[str]:
        return [n for n, b in self.bindings.items() if b.data_dependent]

    def check_fits(self, name: str, shape: Sequence[int]) -> int:
        """Bytes a tensor of ``shape`` needs; raises if it exceeds the planned slot."""
        binding = self.bindings[name]
        need = volume(shape) * binding.dtype.itemsize
        have = self.nbytes.get(name)
        if have is not None and need > have:
            raise InvalidInputError(
                f"Tensor '{name}' of shape {tuple(shape)} needs {need} bytes but the engine's largest "
                f"profile allows {binding.max_shape} ({have} bytes): use a smaller shape or rebuild "
                "with a larger --shapes max.")
        return need


def plan_buffers(bindings: Sequence[TensorBinding], alignment: int = TENSOR_ALIGNMENT) -> BufferPlan:
    """Plan one buffer per tensor at its maximum size.

    Guarantees: every slot is >= ``alignment`` bytes and a multiple of it (a
    zero-sized tensor still gets a valid address), names are unique, and
    data-dependent outputs get no slot (their allocator provides one).
    """
    by_name: dict[str, TensorBinding] = {}
    sizes: dict[str, int] = {}
    for b in bindings:
        if b.name in by_name:
            raise InvalidInputError(f"Tensor name '{b.name}' appears twice in the engine's I/O.")
        by_name[b.name] = b
        if b.max_shape is None:
            if b.is_input:
                raise InvalidInputError(f"Input '{b.name}' has no maximum shape: the engine needs an "
                                        "optimization profile for it.")
            continue
        sizes[b.name] = max(alignment, align_up(volume(b.max_shape) * b.dtype.itemsize, alignment))
    return BufferPlan(by_name, sizes, alignment)


__all__ = ["TENSOR_ALIGNMENT", "volume", "align_up", "max_shape", "TensorBinding", "BufferPlan",
           "plan_buffers"]
