"""The one Runner interface every backend implements.

Modelled on Polygraphy's runners: the base class owns the life cycle
(activate / infer / deactivate, context manager), input validation and the
concurrency helpers; a backend fills in the ``*_impl`` methods. Runners are
interchangeable in ``bench``, ``compare`` and ``serve``.
"""
from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import logging
import threading
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

from ..errors import InvalidInputError, RunnerError
from ..log import progress
from ..onnx_io import TensorSpec, check_array

log = logging.getLogger(__name__)

Feed = Mapping[str, np.ndarray]
T = TypeVar("T")


def validate_each(feeds: Sequence[Any], validate: Callable[[Any], T]) -> list[T]:
    """Every feed of a batch validated before any runs; a bad one is named by its position."""
    checked = []
    for i, f in enumerate(feeds):
        try:
            checked.append(validate(f))
        except InvalidInputError as exc:
            raise InvalidInputError(f"Feed #{i} of the batch: {exc}") from exc
    return checked


class Runner(abc.ABC):
    """Base class of all runners.

    Subclasses implement ``activate_impl``, ``deactivate_impl``, ``infer_impl``,
    ``input_specs_impl`` and ``output_specs_impl``. ``infer`` may be called from
    several threads at once only if the subclass sets ``thread_safe = True``;
    otherwise calls are serialised by a lock. ``deactivate`` refuses new calls,
    waits for the running ones, then releases the backend under the same lock.

    Per-call timing is not kept on the runner (it is shared by every caller):
    :class:`trt_edge.runtime.Model` returns it with each result.
    """

    backend: str = "abstract"
    thread_safe: bool = False
    #: Worker threads of the pool behind ``infer_async``/``infer_aio`` (set before first use).
    max_async_workers: int = 4

    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__
        self._active = False
        # Two locks on purpose: ``_lock`` serialises infer_impl of runners that are not
        # thread-safe; ``_pool_lock`` guards the lazily created executor. Sharing one lock
        # would make infer_async block until a running inference finishes.
        self._lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._batch_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._batch_workers = 0
        # Calls inside infer() right now; deactivate() waits for them (and refuses new ones).
        self._calls = threading.Condition(threading.Lock())
        self._inflight = 0
        self._deactivating = False

    def __repr__(self) -> str:
        state = "active" if self._active else "inactive"
        return f"<{type(self).__name__} '{self.name}' backend={self.backend} {state}>"

    # ---- life cycle -------------------------------------------------------------
    @property
    def is_active(self) -> bool:
        return self._active

    def activate(self) -> "Runner":
        if self._active:
            raise RunnerError(f"Runner '{self.name}' is already active; deactivate it before "
                              "activating again.")
        self.activate_impl()
        with self._calls:
            self._deactivating = False
            self._active = True
        return self

    def deactivate(self) -> None:
        """Release resources after the running calls finish; new calls are refused. Safe twice."""
        if not self._active:
            return
        try:
            with self._pool_lock:
                executor, self._executor = self._executor, None
                batch, self._batch_executor, self._batch_workers = self._batch_executor, None, 0
            for pool in (executor, batch):
                if pool is not None:
                    # Let submitted inferences finish before their resources go away.
                    pool.shutdown(wait=True)
            with self._calls:
                self._deactivating = True
                while self._inflight:
                    self._calls.wait()
            with self._lock:  # no non-thread-safe infer_impl can be half-way through
                self.deactivate_impl()
        finally:
            with self._calls:
                self._active = False
                self._deactivating = False

    close = deactivate

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    def __del__(self) -> None:  # last resort; never raise from a finaliser
        try:
            if getattr(self, "_active", False):
                self.deactivate()
        except Exception:  # noqa: BLE001
            pass

    def _check_active(self) -> None:
        if not self._active:
            raise RunnerError(f"Runner '{self.name}' is not active: use it as a context manager "
                              "(`with runner:`) or call activate() first.")

    # ---- metadata ---------------------------------------------------------------
    def input_specs(self) -> list[TensorSpec]:
        self._check_active()
        return self.input_specs_impl()

    def output_specs(self) -> list[TensorSpec]:
        self._check_active()
        return self.output_specs_impl()

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.output_specs()]

    # ---- inference --------------------------------------------------------------
    def validate_inputs(self, feed: Feed) -> dict[str, np.ndarray]:
        """Check names, dtypes and shapes; return the feed as C-contiguous arrays.

        Guarantees on return: exactly the model's input names, each array with the
        model's dtype, the model's rank, every fixed dimension equal to the model's,
        and every symbolic dimension (e.g. ``batch``) the same size in all inputs
        that share it. Raises :class:`InvalidInputError` naming the input and the fix.
        """
        if not isinstance(feed, Mapping):
            raise InvalidInputError(f"Inputs must be a mapping of name -> array, got {type(feed).__name__}.")
        specs = {s.name: s for s in self.input_specs()}
        unknown = sorted(set(feed) - set(specs))
        missing = sorted(set(specs) - set(feed))
        if unknown or missing:
            expected = ", ".join(s.describe() for s in specs.values())
            raise InvalidInputError(
                "Input names do not match the model: "
                + (f"unknown {unknown}; " if unknown else "")
                + (f"missing {missing}; " if missing else "")
                + f"the model expects {expected}.")
        out: dict[str, np.ndarray] = {}
        symbols: dict[str, tuple[int, str]] = {}  # dim_param -> (size, first input that fixed it)
        for name, spec in specs.items():
            arr = check_array(name, feed[name], spec)
            if spec.shape is not None:
                for axis, (got, want) in enumerate(zip(arr.shape, spec.shape)):
                    if isinstance(want, str) and want:
                        seen = symbols.setdefault(want, (got, name))
                        if seen[0] != got:
                            raise InvalidInputError(
                                f"Dimension '{want}' is {seen[0]} in input '{seen[1]}' but {got} in "
                                f"input '{name}' (axis {axis}); inputs sharing a named dimension must "
                                "agree on its size.")
            out[name] = np.ascontiguousarray(arr) if arr.ndim else arr  # (it makes 0-d arrays 1-d)
        return out

    def infer(self, feed: Feed, check_inputs: bool = True) -> dict[str, np.ndarray]:
        """Run one inference; returns output name -> array (owned by the caller)."""
        self._check_active()
        feed = self.validate_inputs(feed) if check_inputs else dict(feed)
        with self._calls:
            if not self._active or self._deactivating:
                raise RunnerError(f"Runner '{self.name}' is being deactivated: it accepts no new calls.")
            self._inflight += 1
        try:
            if self.thread_safe:
                return self.infer_impl(feed)
            with self._lock:
                return self.infer_impl(feed)
        finally:
            with self._calls:
                self._inflight -= 1
                if not self._inflight:
                    self._calls.notify_all()

    # ---- execution instances (for trt_edge.runtime.Model's pool) ----------------------
    def create_instances(self, count: int) -> list[Any]:
        """``count`` execution instances of this *active* runner, made now (see ``runtime.pool``).

        The default, for thread-safe runners, is ``count`` slots that call
        ``infer_impl`` directly (ONNX Runtime: one session, ``count`` concurrent
        ``run`` calls). A backend with per-call state (TensorRT: context, stream,
        buffers) overrides this to make real, separate instances. Runners that are
        not thread-safe raise: make one runner per instance instead (``Model.load``
        does). The caller closes every instance before deactivating the runner.
        """
        self._check_active()
        if count < 1:
            raise InvalidInputError(f"instances must be >= 1, got {count}.")
        if not self.thread_safe:
            raise RunnerError(f"Runner '{self.name}' is not thread-safe: it cannot lend several "
                              "execution instances; open one runner per instance.")
        return [RunnerSlot(self, i) for i in range(count)]

    # ---- concurrency ------------------------------------------------------------
    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._pool_lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=max(1, int(self.max_async_workers)),
                    thread_name_prefix=f"{self.name}-infer")
            return self._executor

    def infer_async(self, feed: Feed, check_inputs: bool = True
                    ) -> concurrent.futures.Future[dict[str, np.ndarray]]:
        """Submit one inference to the runner's thread pool; returns a Future.

        Inputs are validated before submission, so a wrong feed raises here and
        not later from ``future.result()``. At most ``max_async_workers``
        inferences run at once; ``deactivate`` waits for submitted ones.
        """
        self._check_active()
        if check_inputs:
            feed = self.validate_inputs(feed)
        return self._pool().submit(self.infer, feed, False)

    async def infer_aio(self, feed: Feed, check_inputs: bool = True) -> dict[str, np.ndarray]:
        """``await runner.infer_aio(feed)`` from asyncio code without blocking the loop."""
        return await asyncio.wrap_future(self.infer_async(feed, check_inputs))

    def infer_batch(self, feeds: Sequence[Feed], num_threads: int = 1,
                    show_progress: bool = False) -> list[dict[str, np.ndarray]]:
        """Run many feeds, ``num_threads`` at a time; results keep the input order.

        Every feed is validated first, so a bad feed fails before any work runs.
        With ``num_threads > 1`` the feeds run concurrently (truly in parallel for
        thread-safe runners, which release the GIL in native code) on worker
        threads the runner keeps between calls; the first failure is raised after
        every feed has finished.
        """
        self._check_active()
        if num_threads < 1:
            raise InvalidInputError(f"num_threads must be >= 1, got {num_threads}.")
        checked = validate_each(feeds, self.validate_inputs)
        if num_threads == 1 or len(checked) <= 1:
            return [self.infer(f, check_inputs=False)
                    for f in progress(checked, len(checked), f"{self.name}: inference",
                                      enabled=show_progress)]
        pool = self._batch_pool(num_threads)
        futures = [pool.submit(self.infer, f, False) for f in checked]
        for _ in progress(concurrent.futures.as_completed(futures), len(futures), f"{self.name}: inference",
                          enabled=show_progress):
            pass  # every feed finishes (or fails) before the first failure is raised
        return [fut.result() for fut in futures]

    def _batch_pool(self, num_threads: int) -> concurrent.futures.ThreadPoolExecutor:
        """The runner's batch workers, kept between calls (remade only for more threads)."""
        with self._pool_lock:
            pool = self._batch_executor
            if pool is None or self._batch_workers < num_threads:
                if pool is not None:
                    pool.shutdown(wait=False)  # idle: calls wait for their own futures
                pool = self._batch_executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=num_threads, thread_name_prefix=f"{self.name}-batch")
                self._batch_workers = num_threads
            return pool

    # ---- backend hooks ----------------------------------------------------------
    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def deactivate_impl(self) -> None: ...

    @abc.abstractmethod
    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def input_specs_impl(self) -> list[TensorSpec]: ...

    @abc.abstractmethod
    def output_specs_impl(self) -> list[TensorSpec]: ...

    def describe(self) -> dict[str, Any]:
        """Backend details recorded in benchmark JSON (override to add more)."""
        return {"backend": self.backend, "runner": self.name, "thread_safe": self.thread_safe}

    def instance_memory_bytes(self) -> int | None:
        """Bytes one execution instance holds beyond the shared model (None: not known)."""
        return None


class RunnerSlot:
    """An execution instance that is a slot of a thread-safe runner (or, alone, a whole runner).

    ``run`` skips validation (the pool's owner validated the feed) and the
    runner's call counting (the owner closes its instances before deactivating).
    """

    def __init__(self, runner: Runner, index: int) -> None:
        self.runner = runner
        self.index = index
        self._serialise = not runner.thread_safe
        if not self._serialise:
            self.run = runner.infer_impl  # type: ignore[method-assign]  # one call frame less per call

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._serialise:
            with self.runner._lock:
                return self.runner.infer_impl(feed)
        return self.runner.infer_impl(feed)

    def close(self) -> None:
        """A slot owns nothing; the runner is released by its owner."""
