"""The narrow timing hook a runtime backend offers to ``trt_edge.bench``.

The runtime never imports ``bench``: instead a backend that can time the
phases of one inference on the device (the TensorRT runner, with CUDA events)
offers :meth:`TimedIterationHook.timed_iterations`. ``bench.trt_timing`` drives
the loop (warm-up, iteration budget, statistics, tegrastats, variants) through
it. The hook borrows one execution instance for the duration, so the
measurement never changes state other callers share.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping, NamedTuple, Protocol, runtime_checkable

import numpy as np


class IterationTimes(NamedTuple):
    """One query: device times from CUDA events, enqueue from the host clock (ms)."""

    h2d_ms: float
    compute_ms: float
    d2h_ms: float
    enqueue_ms: float


@runtime_checkable
class TimedIterationHook(Protocol):
    """What a backend offers for device-side timing."""

    def timed_iterations(self, feed: Mapping[str, np.ndarray], *, cuda_graph: bool | None = None,
                         transfers: bool = True
                         ) -> contextlib.AbstractContextManager[Callable[[], IterationTimes]]:
        """Borrow an instance, set it up for ``feed``; yields ``step()`` timing one query.

        ``cuda_graph`` (None: the runner's option) and ``transfers`` apply to this
        measurement only. ``step`` must be called on the thread that entered the
        context (the CUDA context is current there).
        """
        ...

    def timing_facts(self) -> dict[str, Any]:
        """Facts recorded with a timing report (zero-copy, data-dependent outputs...)."""
        ...


__all__ = ["IterationTimes", "TimedIterationHook"]
