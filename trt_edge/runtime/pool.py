"""A fixed pool of execution instances that callers borrow and return.

An *execution instance* is what one inference needs to itself: a TensorRT
execution context with its stream and I/O buffers, an ONNX Runtime session (or
a slot of a shared, thread-safe session), an activated runner. The pool holds
exactly the instances it was given, all created up front; it never makes more,
so the memory of a model is ``instances x (what one instance holds)`` no matter
how many threads call it. Thread safety is by construction: an instance is used
by one caller at a time, between ``acquire`` and ``release``.

Closing: ``close()`` stops handing out instances (``acquire`` raises
:class:`RunnerError` "closing"), waits until every borrowed instance is back,
then closes them all. An instance returned after a ``close(wait=False)`` is
closed on return, and the pool's ``on_drained`` callback runs once when the
last one is back.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import threading
import time
from typing import Callable, Generic, Iterator, Protocol, Sequence, TypeVar

import numpy as np

from ..errors import InvalidInputError, PoolTimeoutError, RunnerError

log = logging.getLogger(__name__)


class ExecInstance(Protocol):
    """What the pool hands out. ``run`` is only ever called by the borrower."""

    index: int

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


I = TypeVar("I", bound=ExecInstance)


@dataclasses.dataclass(frozen=True)
class PoolStats:
    """A snapshot of the pool's counters."""

    instances: int      # instances the pool owns (fixed at creation)
    in_use: int         # borrowed right now
    peak_in_use: int    # most borrowed at once since creation
    borrows: int        # completed acquire() calls
    waits: int          # acquire() calls that had to wait for a free instance
    closed: bool


class InstancePool(Generic[I]):
    """Borrow/return over a fixed list of instances (LIFO: a warm instance is reused first)."""

    def __init__(self, instances: Sequence[I], name: str = "pool",
                 on_drained: Callable[[], None] | None = None) -> None:
        if not instances:
            raise InvalidInputError("An instance pool needs at least one instance (instances >= 1).")
        self.name = name
        self._all: tuple[I, ...] = tuple(instances)
        self._free: collections.deque[I] = collections.deque(self._all)
        # The fast path takes the lock itself (a C call); the Condition on the same lock is
        # used only to wait and to wake waiters.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closing = False
        self._closed = False
        self._in_use = 0
        self._peak = 0
        self._borrows = 0
        self._waits = 0
        self._waiting = 0  # threads blocked in acquire(): release() notifies only then
        self._on_drained = on_drained

    @property
    def size(self) -> int:
        return len(self._all)

    @property
    def instances(self) -> tuple[I, ...]:
        return self._all

    @property
    def closing(self) -> bool:
        return self._closing

    def stats(self) -> PoolStats:
        with self._lock:
            return PoolStats(len(self._all), self._in_use, self._peak, self._borrows, self._waits,
                             self._closed)

    # ---- borrow / return ----------------------------------------------------------------
    def acquire(self, timeout: float | None = None) -> I:
        """A free instance; waits up to ``timeout`` seconds (None: as long as it takes).

        Raises :class:`PoolTimeoutError` when none frees up in time and
        :class:`RunnerError` once the pool is closing.
        """
        with self._lock:
            if self._closing:
                raise RunnerError(f"'{self.name}' is closing: it accepts no new calls.")
            if not self._free:
                self._waits += 1
                deadline = None if timeout is None else time.monotonic() + timeout
                self._waiting += 1
                try:
                    while not self._free:
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            raise PoolTimeoutError(
                                f"No execution instance of '{self.name}' became free within {timeout:g} s "
                                f"(all {len(self._all)} busy): raise the timeout, load the model with more "
                                "instances, or send fewer concurrent calls.")
                        self._cond.wait(remaining)
                        if self._closing:
                            raise RunnerError(f"'{self.name}' is closing: it accepts no new calls.")
                finally:
                    self._waiting -= 1
            inst = self._free.pop()
            self._in_use += 1
            self._borrows += 1
            if self._in_use > self._peak:
                self._peak = self._in_use
            return inst

    def release(self, inst: I) -> None:
        """Give ``inst`` back (exactly once per ``acquire``)."""
        drained = False
        with self._lock:
            if self._in_use <= 0:
                raise RunnerError(f"'{self.name}': release() without a matching acquire().")
            self._in_use -= 1
            if self._closed:
                # close(wait=False) left it out: it is closed now that it is back.
                _close_quietly(inst)
                drained = self._in_use == 0
            else:
                self._free.append(inst)
            if self._closing:
                self._cond.notify_all()  # close() waits for the last one
            elif self._waiting:
                self._cond.notify()
        if drained:
            self._drained()

    @contextlib.contextmanager
    def borrow(self, timeout: float | None = None) -> Iterator[I]:
        inst = self.acquire(timeout)
        try:
            yield inst
        finally:
            self.release(inst)

    # ---- shutdown -----------------------------------------------------------------------
    def close(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Stop lending; with ``wait``, wait for borrowed instances, then close every instance.

        Safe to call twice. With ``wait`` and a ``timeout`` that runs out while
        instances are still borrowed, raises :class:`PoolTimeoutError` and leaves
        the pool closing (call ``close`` again to wait longer). With
        ``wait=False`` the free instances are closed now and the borrowed ones
        when they come back.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()  # waiters in acquire() give up
            if wait:
                deadline = None if timeout is None else time.monotonic() + timeout
                while self._in_use:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise PoolTimeoutError(
                            f"'{self.name}': {self._in_use} call(s) still running after {timeout:g} s; "
                            "the model stays closed to new calls: call close() again to wait for them.")
                    self._cond.wait(remaining)
            if self._closed:
                return
            self._closed = True
            free, self._free = list(self._free), collections.deque()
            drained = self._in_use == 0
        for inst in free:
            _close_quietly(inst)
        if drained:
            self._drained()

    def _drained(self) -> None:
        callback, self._on_drained = self._on_drained, None
        if callback is not None:
            try:
                callback()
            except Exception:  # noqa: BLE001 - shutdown must finish
                log.exception("%s: releasing the backend failed", self.name)


def _close_quietly(inst: ExecInstance) -> None:
    try:
        inst.close()
    except Exception:  # noqa: BLE001 - one failing instance must not leak the others
        log.exception("closing execution instance %s failed", getattr(inst, "index", "?"))


__all__ = ["ExecInstance", "InstancePool", "PoolStats"]
