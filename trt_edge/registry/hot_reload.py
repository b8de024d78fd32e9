"""Hot reload: switch a served model to another registry version without dropping a request.

:class:`HotModel` fronts one model name of a :class:`~trt_edge.registry.store.Registry`. A reload
verifies the new version under the trust policy, loads it from the verified bytes, runs a smoke
inference, and only then swaps it in. Calls that already hold the old version finish on it; the old
version is closed when its last call returns. If verification, loading or the smoke inference
fails, the old version keeps serving, the refusal is written to the audit log, and, when the
failing version had been promoted in the registry, the registry is rolled back to the version
still serving (automatic rollback).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import InvalidInputError, RunnerError, TrtEdgeError
from ..numerics import nonfinite_output
from ..runtime import Model
from .loading import open_verified
from .policy import TrustPolicy
from .store import Registry

log = logging.getLogger(__name__)

SmokeCheck = Callable[[Model], None]


def default_smoke_feed(model: Model) -> dict[str, np.ndarray]:
    """Zeros of each input's dtype and shape (dynamic dims: the batch's opt size, else 1)."""
    feed = {}
    batch = model.signature.batch.opt if model.signature.batch else 1
    for sig in model.signature.inputs:
        if sig.shape is None:
            raise InvalidInputError(f"Input '{sig.name}' has an unknown rank: give smoke_feed= for reloads.")
        shape = tuple(d if isinstance(d, int) and d >= 0 else (batch if i == sig.batch_axis else 1)
                      for i, d in enumerate(sig.shape))
        feed[sig.name] = np.zeros(shape, dtype=sig.dtype)
    return feed


def load_verified_model(version_dir: str | os.PathLike[str], policy: TrustPolicy, *, key: bytes | None = None,
                        artifact: str | None = None, **load_kwargs: Any) -> Model:
    """A runtime :class:`Model` from a registry version, verified before anything is parsed."""
    art = open_verified(version_dir, policy, artifact=artifact, key=key)
    backend = "tensorrt" if art.name.endswith((".plan", ".engine")) else load_kwargs.pop("backend", "auto")
    return Model.load(art.data, backend=backend, **load_kwargs)


@dataclasses.dataclass
class _Slot:
    model: Model
    version: int
    inflight: int = 0
    retired: bool = False


class HotModel:
    """``hm = HotModel(Registry(repo), "mnist", policy=...)``; ``hm.infer(feed)``; ``hm.reload()``."""

    def __init__(self, registry: Registry, name: str, *, policy: TrustPolicy | None = None,
                 key: bytes | None = None, instances: int = 1,
                 smoke_feed: Mapping[str, np.ndarray] | None = None,
                 smoke_check: SmokeCheck | None = None, load_kwargs: Mapping[str, Any] | None = None) -> None:
        self.registry = registry
        self.name = name
        self.policy = policy or TrustPolicy()
        self.key = key
        self.instances = instances
        self.smoke_feed = dict(smoke_feed) if smoke_feed is not None else None
        self.smoke_check = smoke_check
        self.load_kwargs = dict(load_kwargs or {})
        self._cond = threading.Condition()
        self._reload_lock = threading.Lock()
        version = registry.active_version(name)
        if version is None:
            raise InvalidInputError(f"Model '{name}' has no version in '{registry.root}'.")
        self._slot = _Slot(self._load_checked(version), version)
        registry.log_load(name, version, True)

    @property
    def version(self) -> int:
        return self._slot.version

    @property
    def model(self) -> Model:
        return self._slot.model

    # ---- loading ---------------------------------------------------------------------------
    def _load_checked(self, version: int) -> Model:
        vdir = self.registry.version_dir(self.name, version)
        model = load_verified_model(vdir, self.policy, key=self.key, name=self.name, version=str(version),
                                    instances=self.instances, **self.load_kwargs)
        try:
            feed = self.smoke_feed if self.smoke_feed is not None else default_smoke_feed(model)
            bad = nonfinite_output(model.infer(feed).outputs)
            if bad is not None:
                raise RunnerError(f"smoke inference of version {version}: output '{bad}' is not finite")
            if self.smoke_check is not None:
                self.smoke_check(model)
        except BaseException:
            model.close(wait=False)
            raise
        return model

    def reload(self, version: int | None = None) -> int:
        """Switch to ``version`` (default: the registry's active one); return the version serving."""
        with self._reload_lock:
            target = self.registry.active_version(self.name) if version is None else int(version)
            if target is None or target == self._slot.version:
                return self._slot.version
            try:
                new = self._load_checked(target)
            except TrtEdgeError as exc:
                self._refused(target, exc)
                return self._slot.version
            except Exception as exc:  # noqa: BLE001 - a backend failure on a bad model: refuse it too
                self._refused(target, exc)
                return self._slot.version
            with self._cond:
                old, self._slot = self._slot, _Slot(new, target)
                old.retired = True
                idle = old.inflight == 0
            if idle:
                old.model.close(wait=True)
            self.registry.log_load(self.name, target, True)
            log.info("hot reload: %s now serves version %d (was %d)", self.name, target, old.version)
            return target

    def _refused(self, target: int, exc: BaseException) -> None:
        serving = self._slot.version
        log.error("hot reload of %s to version %d refused, version %d keeps serving: %s", self.name, target,
                  serving, exc)
        self.registry.log_load(self.name, target, False, reason=str(exc).splitlines()[0][:500])
        try:
            self.registry.roll_back_if_active(self.name, target, serving)
        except TrtEdgeError as err:
            log.error("could not roll the registry back to version %d: %s", serving, err)

    # ---- inference ---------------------------------------------------------------------------
    def infer(self, feed: Mapping[str, np.ndarray], **kwargs: Any):
        with self._cond:
            slot = self._slot
            slot.inflight += 1
        try:
            return slot.model.infer(feed, **kwargs)
        finally:
            with self._cond:
                slot.inflight -= 1
                close = slot.retired and slot.inflight == 0
            if close:
                slot.model.close(wait=True)

    def close(self) -> None:
        with self._cond:
            slot = self._slot
            slot.retired = True
            idle = slot.inflight == 0
        if idle:
            slot.model.close(wait=True)
