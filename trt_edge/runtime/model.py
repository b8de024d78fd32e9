"""A loaded model: typed signature, identity, backend facts and a pool of execution instances.

``Model.load(artifact, instances=N)`` opens the artifact once and makes N
execution instances up front (TensorRT: N contexts with their streams and
buffers; ONNX Runtime: N slots of one thread-safe session, or N sessions with
``separate_sessions=True``; a backend that is not thread-safe: N runners).
Every call (``infer``, ``infer_async``, ``infer_aio``, ``infer_batch``)
borrows one instance, runs, and returns it; the pool never grows, so memory is
bounded by ``describe().memory``. Per-call timing comes back in each
:class:`InferResult`; nothing per call is stored on the model. ``close()``
refuses new calls, waits for the running ones and releases the backend.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import onnx

from ..errors import InvalidInputError, RunnerError
from ..log import progress
from .base import Runner, RunnerSlot, validate_each
from .identity import BackendInfo, ModelIdentity, backend_info_for, identity_of
from .pool import InstancePool, PoolStats
from .signature import ModelSignature, signature_from_specs

log = logging.getLogger(__name__)

Feed = Mapping[str, np.ndarray]


class CallTiming(NamedTuple):
    """Where one call's time went (seconds). Immutable; a NamedTuple because it is made on
    every call (a frozen dataclass costs several times more to build)."""

    queue_s: float     # waiting for a free instance
    compute_s: float   # inside the backend's run
    total_s: float     # validation + queue + compute

    def to_json(self) -> dict[str, float]:
        return self._asdict()


@dataclasses.dataclass
class InferResult:
    outputs: dict[str, np.ndarray]
    timing: CallTiming
    instance: int      # which execution instance ran it


@dataclasses.dataclass(frozen=True)
class MemoryBound:
    """What a loaded model can hold at most: stated from N and the profile, not measured."""

    instances: int
    per_instance_bytes: int | None   # I/O buffers + activation memory of one instance (None: unknown)
    shared: str                      # what all instances share (weights: once)

    @property
    def total_instance_bytes(self) -> int | None:
        return None if self.per_instance_bytes is None else self.instances * self.per_instance_bytes


@dataclasses.dataclass(frozen=True)
class ModelDescription:
    identity: ModelIdentity
    signature: ModelSignature
    backend: BackendInfo
    instances: int
    memory: MemoryBound
    pool: PoolStats
    runner: Mapping[str, Any]


class Model:
    """See the module docstring. Use :meth:`load` (or ``trt_edge.runtime.load_model``)."""

    def __init__(self, runners: Sequence[Runner], instances: Sequence[Any], identity: ModelIdentity,
                 backend_info: BackendInfo, *, separate: bool) -> None:
        self._runners = list(runners)
        self._main = self._runners[0]
        self.identity = identity
        self.backend_info = backend_info
        self.name = identity.name
        self.instances = len(instances)
        specs_in, specs_out = self._main.input_specs(), self._main.output_specs()
        ranges = getattr(self._main, "profile_ranges", None)
        self.signature: ModelSignature = signature_from_specs(
            specs_in, specs_out, ranges() if callable(ranges) and self._main.backend == "tensorrt" else None)
        per = self._main.instance_memory_bytes()
        shared = ("one engine (weights once) for all instances" if self._main.backend == "tensorrt" else
                  "one copy of the model per instance" if separate else
                  "one session (weights once) for all instances")
        self.memory = MemoryBound(self.instances, per, shared)
        self._pool: InstancePool[Any] = InstancePool(instances, name=f"model '{self.name}'")
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.instances, thread_name_prefix=f"{self.name}-infer")
        self._state = threading.Lock()
        self._closing = False
        self._closed = False
        self._outstanding: set[concurrent.futures.Future[InferResult]] = set()

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, artifact: str | os.PathLike[str] | bytes | onnx.ModelProto | Runner, *,
             name: str | None = None, version: str = "1", instances: int = 1, backend: str = "auto",
             options: Any = None, separate_sessions: bool = False,
             runner_factory: Callable[[], Runner] | None = None) -> "Model":
        """Open ``artifact`` and make ``instances`` execution instances now.

        ``options``: the backend's options (``OrtOptions`` / ``TrtRunnerOptions``).
        ``separate_sessions``: one ONNX Runtime session per instance instead of
        slots of one thread-safe session (N copies of the weights; isolates the
        sessions' scratch memory). ``runner_factory``: make the runners yourself
        (any :class:`Runner`); a runner that is not thread-safe is made once per
        instance. An inactive :class:`Runner` may be passed as ``artifact``.
        """
        if not isinstance(instances, int) or isinstance(instances, bool) or instances < 1:
            raise InvalidInputError(f"instances must be an integer >= 1, got {instances!r}.")
        factory = runner_factory or _factory_for(artifact, backend, options)
        source = None if isinstance(artifact, Runner) else artifact
        # Identity first: an artifact that does not match its sidecar is refused before
        # any backend deserializes it.
        ident = identity_of(source, None, name=name, version=version) if source is not None else None
        runners: list[Runner] = []
        made: list[Any] = []
        try:
            first = factory().activate()
            runners.append(first)
            separate = separate_sessions or not first.thread_safe
            if separate:
                if isinstance(artifact, Runner) and runner_factory is None and instances > 1:
                    raise InvalidInputError(
                        f"Runner '{first.name}' is not thread-safe (or separate sessions were asked "
                        "for): pass runner_factory= to make one runner per instance.")
                runners += [factory().activate() for _ in range(instances - 1)]
                made = [RunnerSlot(r, i) for i, r in enumerate(runners)]
            else:
                made = first.create_instances(instances)
            if ident is None:
                ident = identity_of(None, first, name=name, version=version)
            info = backend_info_for(first, source)
            model = cls(runners, made, ident, info, separate=separate)
        except BaseException:
            for inst in made:
                inst.close()
            for r in runners:
                r.deactivate()
            raise
        log.info("loaded %s v%s (%s, %d instance%s)", model.name, version, info.backend, instances,
                 "" if instances == 1 else "s")
        return model

    # ---- inference ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closing:
            raise RunnerError(f"Model '{self.name}' is closing" + (" (closed)" if self._closed else "")
                              + ": it accepts no new calls. Load it again to use it.")

    def validate(self, feed: Feed) -> dict[str, np.ndarray]:
        """The feed checked against the signature (names, dtypes, shapes, batch limits)."""
        checked = self._main.validate_inputs(feed)
        if self.signature.batch is not None:
            size = self.signature.batch_size(checked)
            if size is not None:
                self.signature.batch.check(size)
        return checked

    def _run(self, feed: dict[str, np.ndarray], timeout: float | None, t0: float) -> InferResult:
        t_wait = time.perf_counter()
        inst = self._pool.acquire(timeout)
        t1 = time.perf_counter()
        try:
            outputs = inst.run(feed)
        finally:
            self._pool.release(inst)
        t2 = time.perf_counter()
        return InferResult(outputs, CallTiming(t1 - t_wait, t2 - t1, t2 - t0), inst.index)

    def infer(self, feed: Feed, *, timeout: float | None = None, check_inputs: bool = True) -> InferResult:
        """Validate, borrow an instance (waiting up to ``timeout`` s), run, return it."""
        t0 = time.perf_counter()
        self._check_open()
        checked = self.validate(feed) if check_inputs else feed if isinstance(feed, dict) else dict(feed)
        return self._run(checked, timeout, t0)

    def infer_async(self, feed: Feed, *, timeout: float | None = None,
                    check_inputs: bool = True) -> concurrent.futures.Future[InferResult]:
        """Validate now (a bad feed raises here), run on the model's worker threads; a Future.

        ``timeout`` bounds the wait for an instance once the call starts. At most
        ``instances`` calls run at once; ``close()`` waits for accepted calls.
        """
        t0 = time.perf_counter()
        self._check_open()
        checked = self.validate(feed) if check_inputs else dict(feed)
        with self._state:
            self._check_open()
            fut = self._executor.submit(self._run, checked, timeout, t0)
            self._outstanding.add(fut)
        fut.add_done_callback(self._forget)
        return fut

    def _forget(self, fut: concurrent.futures.Future[InferResult]) -> None:
        with self._state:
            self._outstanding.discard(fut)

    async def infer_aio(self, feed: Feed, *, timeout: float | None = None,
                        check_inputs: bool = True) -> InferResult:
        """``await model.infer_aio(feed)`` without blocking the event loop."""
        return await asyncio.wrap_future(self.infer_async(feed, timeout=timeout, check_inputs=check_inputs))

    def infer_batch(self, feeds: Sequence[Feed], *, show_progress: bool = False,
                    timeout: float | None = None) -> list[InferResult]:
        """Run many feeds over the instances; results keep the input order.

        Every feed is validated first, so a bad feed fails before any work runs;
        the model's own worker threads run them (no threads are made per call).
        """
        checked = validate_each(feeds, self.validate)
        if self.instances == 1 or len(checked) <= 1:
            return [self.infer(f, timeout=timeout, check_inputs=False)
                    for f in progress(checked, len(checked), f"{self.name}: inference", enabled=show_progress)]
        futures = [self.infer_async(f, timeout=timeout, check_inputs=False) for f in checked]
        return [f.result() for f in progress(futures, len(futures), f"{self.name}: inference",
                                            enabled=show_progress)]

    # ---- facts ---------------------------------------------------------------------------------
    def pool_stats(self) -> PoolStats:
        return self._pool.stats()

    def describe(self) -> ModelDescription:
        return ModelDescription(self.identity, self.signature, self.backend_info, self.instances,
                                self.memory, self._pool.stats(), dict(self._main.describe()))

    @property
    def runner(self) -> Runner:
        """The (first) runner behind the model, for Runner-based tools (bench, compare)."""
        return self._main

    # ---- shutdown ------------------------------------------------------------------------------
    def close(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Refuse new calls; with ``wait``, wait for accepted ones, then release everything.

        Safe to call twice. A ``timeout`` that runs out raises
        :class:`~trt_edge.errors.PoolTimeoutError` with the model still closing
        (call ``close`` again to finish). ``wait=False`` cancels accepted calls
        that have not started and releases the backend when the running ones end.
        """
        with self._state:
            self._closing = True
            outstanding = list(self._outstanding)
        if self._closed:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        if wait:
            done, pending = concurrent.futures.wait(outstanding, timeout=timeout)
            if pending:
                from ..errors import PoolTimeoutError

                raise PoolTimeoutError(f"Model '{self.name}': {len(pending)} accepted call(s) still "
                                       f"running after {timeout:g} s; call close() again to wait for them.")
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._pool.close(wait=True, timeout=remaining)
            self._executor.shutdown(wait=True)
            self._release_runners()
        else:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._pool._on_drained = self._release_runners
            self._pool.close(wait=False)

    def _release_runners(self) -> None:
        if self._closed:
            return
        self._closed = True
        for r in self._runners:
            try:
                r.deactivate()
            except Exception:  # noqa: BLE001 - release the others too
                log.exception("deactivating %s failed", r.name)

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "closing" if self._closing else "open"
        return (f"<Model '{self.name}' v{self.identity.version} {self.backend_info.backend} "
                f"x{self.instances} {state}>")


def _factory_for(artifact: Any, backend: str, options: Any) -> Callable[[], Runner]:
    from .factory import open_runner
    from .onnxrt import OrtOptions

    if isinstance(artifact, Runner):
        if artifact.is_active:
            raise InvalidInputError(f"Runner '{artifact.name}' is already active: pass it inactive; "
                                    "the model activates and releases it.")
        return lambda: artifact
    ort = options if isinstance(options, OrtOptions) else None
    trt = None if ort is not None else options
    if isinstance(artifact, (str, os.PathLike)) and not Path(artifact).exists():
        raise InvalidInputError(f"Model artifact '{artifact}' does not exist.")
    return lambda: open_runner(artifact, backend, ort_options=ort, trt_options=trt)


def load_model(artifact: Any, **kwargs: Any) -> Model:
    """``Model.load(artifact, **kwargs)``."""
    return Model.load(artifact, **kwargs)


__all__ = ["Model", "load_model", "InferResult", "CallTiming", "ModelDescription", "MemoryBound"]
