"""A model's typed signature: tensors, the batch axis and the batch limits.

The batching contract a server needs: which axis of each input and output is
the batch (so outputs of a merged batch can be split back without guessing),
and the smallest / preferred / largest batch the backend accepts: from the
TensorRT optimization profile, or from the ONNX dims (a fixed batch dim means
min = opt = max; a symbolic one means 1 / 1 / unbounded).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..onnx_io import TensorSpec

Dim = int | str | None


@dataclasses.dataclass(frozen=True)
class BatchLimits:
    """Batch sizes the model accepts; ``max`` None = unbounded (dynamic ONNX batch)."""

    min: int
    opt: int
    max: int | None

    def __post_init__(self) -> None:
        if self.min < 0 or self.opt < self.min or (self.max is not None and self.max < self.opt):
            raise InvalidInputError(f"Batch limits must satisfy 0 <= min <= opt <= max, got "
                                    f"{self.min}/{self.opt}/{self.max}.")

    def check(self, batch: int) -> None:
        if batch < self.min or (self.max is not None and batch > self.max):
            top = "unbounded" if self.max is None else str(self.max)
            raise InvalidInputError(f"Batch size {batch} is outside the model's batch limits "
                                    f"{self.min}..{top}: split the batch or pad it.")

    def describe(self) -> str:
        return f"{self.min}/{self.opt}/{'inf' if self.max is None else self.max}"


@dataclasses.dataclass(frozen=True)
class TensorSig:
    """One input or output: name, dtype, full shape (batch axis included) and the batch axis."""

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...] | None
    batch_axis: int | None

    @property
    def element_shape(self) -> tuple[Dim, ...] | None:
        """The shape without the batch axis (None when the rank is unknown)."""
        if self.shape is None:
            return None
        if self.batch_axis is None:
            return self.shape
        return self.shape[:self.batch_axis] + self.shape[self.batch_axis + 1:]

    def describe(self) -> str:
        dims = "?" if self.shape is None else "x".join("?" if d is None else str(d) for d in self.shape)
        batch = "" if self.batch_axis is None else f", batch axis {self.batch_axis}"
        return f"{self.name}: {self.dtype.name}[{dims}]{batch}"

    def to_spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.shape, self.dtype)


@dataclasses.dataclass(frozen=True)
class ModelSignature:
    """Inputs, outputs and the common batch limits (None: no common batch axis)."""

    inputs: tuple[TensorSig, ...]
    outputs: tuple[TensorSig, ...]
    batch: BatchLimits | None

    def input(self, name: str) -> TensorSig:
        for sig in self.inputs:
            if sig.name == name:
                return sig
        raise InvalidInputError(f"The model has no input '{name}'; its inputs are "
                                f"{[s.name for s in self.inputs]}.")

    def batch_size(self, feed: Mapping[str, np.ndarray]) -> int | None:
        """The batch size of a (validated) feed, or None when the model has no batch axis."""
        for sig in self.inputs:
            if sig.batch_axis is not None and sig.name in feed:
                return int(np.shape(feed[sig.name])[sig.batch_axis])
        return None

    def describe(self) -> str:
        parts = ["inputs " + "; ".join(s.describe() for s in self.inputs),
                 "outputs " + "; ".join(s.describe() for s in self.outputs)]
        parts.append("batch " + (self.batch.describe() if self.batch else "none"))
        return ", ".join(parts)


def _dim0(spec: TensorSpec) -> Dim | bool:
    """The first dim of a spec; False for a scalar / unknown rank (no batch axis possible)."""
    if spec.shape is None or len(spec.shape) == 0:
        return False
    return spec.shape[0]


def signature_from_specs(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                         profile: Mapping[str, tuple[tuple[int, ...], ...]] | None = None) -> ModelSignature:
    """Signature from backend tensor specs (axis 0 is the batch when every input agrees on it).

    Without ``profile`` (ONNX): a symbolic / unknown dim 0 shared by all inputs
    gives limits 1/1/unbounded, one fixed size n gives n/n/n, anything else
    means no common batch. With ``profile`` (TensorRT: input -> (min, opt, max)
    shapes) the limits are dim 0 of the profile shapes. An output is batch-major
    when its dim 0 is the inputs' batch symbol, or dynamic like theirs, or the
    same fixed size.
    """
    firsts = [_dim0(s) for s in inputs]
    batch: BatchLimits | None = None
    symbol: Dim | bool = False
    if firsts and all(d is not False for d in firsts):
        fixed = {d for d in firsts if isinstance(d, int) and d >= 0}
        symbolic = {d for d in firsts if not (isinstance(d, int) and d >= 0)}
        names = {d for d in symbolic if isinstance(d, str) and d}
        if profile:
            lims = {(r[0][0], r[1][0], r[2][0]) for r in profile.values() if r and r[0]}
            if len(lims) == 1 and not (fixed and symbolic):
                lo, opt, hi = lims.pop()
                batch = BatchLimits(int(lo), int(opt), int(hi))
                symbol = int(lo) if fixed else None
        elif fixed and not symbolic and len(fixed) == 1:
            n = fixed.pop()
            batch, symbol = BatchLimits(n, n, n), n
        elif symbolic and not fixed and len(names) <= 1 and (names or len(symbolic) == 1):
            batch = BatchLimits(1, 1, None)
            symbol = names.pop() if names else None
    in_sigs = tuple(TensorSig(s.name, np.dtype(s.dtype), s.shape, 0 if batch is not None else None)
                    for s in inputs)
    out_sigs = []
    for s in outputs:
        d = _dim0(s)
        batched = False
        if batch is not None and d is not False:
            if isinstance(symbol, str) or (isinstance(symbol, int) and not isinstance(symbol, bool)):
                batched = d == symbol
            else:  # the inputs' batch dim is dynamic without a name (None / -1)
                batched = d is None or (isinstance(d, int) and d < 0)
        out_sigs.append(TensorSig(s.name, np.dtype(s.dtype), s.shape, 0 if batched else None))
    return ModelSignature(in_sigs, tuple(out_sigs), batch)


__all__ = ["BatchLimits", "TensorSig", "ModelSignature", "signature_from_specs"]
