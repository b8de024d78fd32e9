"""The one seam between the inference service and the runtime.

Every call the service makes into ``trt_edge.runtime`` goes through this module, so a change in
the runtime's API touches one file. The service needs, per loaded model version:

- a typed signature: per tensor name, dtype, full shape and which axis is the batch, plus the
  model's batch limits (min/opt/max);
- identity (content sha256) and backend facts (backend, provider, precision, device);
- ``await infer_aio(feed)`` returning outputs and per-call timing, safe from many callers at
  once (the runtime's instance pool);
- ``close(wait=True)`` that waits for borrowed instances.

It uses the runtime's :class:`trt_edge.runtime.model.Model` (``Model.load`` with ``instances=N``:
a pool of execution instances that callers borrow; per-call timing in the result).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Mapping, Protocol

import numpy as np


log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServedTensor:
    """One input or output as the service sees it."""

    name: str
    dtype: np.dtype              # np.dtype(object) for BYTES
    shape: tuple[int, ...]       # full shape, -1 for dynamic dims
    batch_axis: int | None       # None: the tensor has no batch axis


@dataclasses.dataclass(frozen=True)
class ServedSignature:
    inputs: tuple[ServedTensor, ...]
    outputs: tuple[ServedTensor, ...]
    batch_max: int | None        # None: unbounded dynamic batch
    batchable: bool              # every tensor has batch axis 0 (Triton's max_batch_size > 0 form)


@dataclasses.dataclass(frozen=True)
class ServedFacts:
    sha256: str
    backend: str                 # "onnxruntime" | "tensorrt" | ...
    provider: str
    precision: str
    device: str


@dataclasses.dataclass(frozen=True)
class CallResult:
    outputs: dict[str, np.ndarray]
    queue_s: float               # waiting for a free execution instance
    compute_s: float             # in the backend


class LoadedModel(Protocol):
    signature: ServedSignature
    facts: ServedFacts
    instances: int

    async def infer_aio(self, feed: Mapping[str, np.ndarray]) -> CallResult: ...

    def infer(self, feed: Mapping[str, np.ndarray]) -> CallResult: ...

    def close(self, *, wait: bool = True) -> None: ...


def _dim(d: Any) -> int:
    return int(d) if isinstance(d, (int, np.integer)) and int(d) >= 0 else -1


def load(artifact: str | os.PathLike[str] | bytes, *, name: str, version: str, instances: int,
         backend: str = "auto") -> LoadedModel:
    """Load one model version with ``instances`` execution instances (the runtime's pool).

    ``artifact`` may be the verified bytes of the file (signed/encrypted registry versions)."""
    return _PoolModel(artifact, name=name, version=version, instances=instances, backend=backend)


# ---- the runtime's Model (issue 16) ------------------------------------------------------------

class _PoolModel:
    def __init__(self, artifact: str | os.PathLike[str] | bytes, *, name: str, version: str, instances: int,
                 backend: str) -> None:
        from ..runtime.model import Model  # noqa: PLC0415 - ORT/TensorRT load lazily
        self._model = Model.load(artifact, name=name, version=version, instances=instances,
                                               backend=backend)
        self.instances = int(getattr(self._model, "instances", instances))
        sig = self._model.signature
        # A fixed batch dim (min == max) is no batch axis for a server: Triton serves such a model
        # with max_batch_size 0 and its full dims.
        batch = sig.batch
        dynamic = batch is not None and (batch.max is None or batch.max > batch.min)
        self.signature = _signature_from(
            [(t.name, t.dtype, t.shape, t.batch_axis) for t in sig.inputs],
            [(t.name, t.dtype, t.shape, t.batch_axis) for t in sig.outputs],
            None if batch is None else batch.max, dynamic)
        info, ident = self._model.backend_info, self._model.identity
        self.facts = ServedFacts(ident.sha256, info.backend, info.provider, info.precision, info.device)

    def infer(self, feed: Mapping[str, np.ndarray]) -> CallResult:
        res = self._model.infer(feed)
        return CallResult(res.outputs, res.timing.queue_s, res.timing.compute_s)

    async def infer_aio(self, feed: Mapping[str, np.ndarray]) -> CallResult:
        res = await self._model.infer_aio(feed)
        return CallResult(res.outputs, res.timing.queue_s, res.timing.compute_s)

    def close(self, *, wait: bool = True) -> None:
        self._model.close(wait=wait)


def _signature_from(inputs: list[tuple], outputs: list[tuple], batch_max: int | None,
                    has_batch: bool) -> ServedSignature:
    def conv(items: list[tuple]) -> tuple[ServedTensor, ...]:
        return tuple(ServedTensor(n, np.dtype(dt), tuple(_dim(d) for d in (shape or ())), ax)
                     for n, dt, shape, ax in items)

    ins, outs = conv(inputs), conv(outputs)
    batchable = has_batch and bool(ins) and all(t.batch_axis == 0 for t in ins + outs)
    return ServedSignature(ins, outs, batch_max, batchable)


