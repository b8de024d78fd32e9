"""Progress display for long work (calibration, builds, benchmarks).

Uses rich when installed and stderr is a terminal; otherwise logs every few
seconds, so CI logs show progress without carriage-return noise.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
log = logging.getLogger("trt_edge")


def progress(items: Iterable[T], total: int | None = None, description: str = "working",
             enabled: bool = True, log_every_s: float = 5.0) -> Iterator[T]:
    """Iterate ``items`` showing progress."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if enabled and sys.stderr.isatty():
        try:
            from rich.progress import track
        except ImportError:
            pass
        else:
            yield from track(items, total=total, description=description, transient=True)
            return
    last = start = time.monotonic()
    for i, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if enabled and now - last >= log_every_s:
            last = now
            of = f"/{total}" if total else ""
            log.info("%s: %d%s (%.0fs)", description, i, of, now - start)


@contextlib.contextmanager
def stage(description: str) -> Iterator[None]:
    """Log the start and duration of a stage."""
    log.info("%s ...", description)
    t0 = time.perf_counter()
    yield
    log.info("%s done in %.2fs", description, time.perf_counter() - t0)
