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


class CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler that writes to whatever ``sys.stderr`` is when a record is emitted.

    A plain ``StreamHandler(sys.stderr)`` keeps the stream of the moment it was made;
    when that stream is replaced and closed (pytest's ``capsys``, a redirected
    ``contextlib.redirect_stderr``) every later log call fails. This one looks the
    stream up at write time, like :data:`logging.lastResort`.
    """

    def __init__(self, level: int = logging.NOTSET) -> None:
        logging.Handler.__init__(self, level)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - a text stream
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001 - StreamHandler.setStream assigns it
        pass


CLI_FORMAT = "[trt-edge] %(levelname)s %(message)s"


@contextlib.contextmanager
def cli_logging(level: int, name: str = "trt_edge") -> Iterator[logging.Logger]:
    """Log ``name`` to the current stderr at ``level`` for the duration of the block.

    The logger's handlers, level and ``propagate`` flag are restored on exit, so a
    command run inside another program (or a test) leaves no handler behind.
    """
    logger = logging.getLogger(name)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    handler = CurrentStderrHandler()
    handler.setFormatter(logging.Formatter(CLI_FORMAT))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield logger
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
