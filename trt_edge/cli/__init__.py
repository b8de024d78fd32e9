"""The ``trt-edge`` command. Thin: every subcommand calls the library.

Each module in this package that defines ``register(subparsers)`` is a
subcommand (discovered, so a feature adds its command without touching this
file). ``ORDER`` (an int) sorts them in ``--help``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import pkgutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Iterator, Sequence

from .. import __version__
from .. import log as _log
from ..errors import TrtEdgeError

log = logging.getLogger("trt_edge")


def _command_modules() -> list:
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "register"):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trt-edge",
        description="PyTorch -> ONNX -> optimized INT8/FP16 engines for TensorRT and ONNX Runtime.")
    parser.add_argument("--version", action="version", version=f"trt-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-v info, -vv debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in _command_modules():
        mod.register(sub)
    return parser


def _log_level(verbose: int, quiet: bool) -> int:
    return logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)


def crash_log_dir() -> Path:
    """Where an unexpected error's traceback is written ($TRT_EDGE_LOG_DIR, else the temp folder)."""
    return Path(os.environ.get("TRT_EDGE_LOG_DIR") or Path(tempfile.gettempdir()) / "trt-edge-logs")


def _write_crash_log(argv: Sequence[str], exc: BaseException) -> Path | None:
    """The full traceback, the command line and the versions, for a bug report."""
    from ..artifacts import tool_versions

    try:
        folder = crash_log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = folder / f"trt-edge-{stamp}-{os.getpid()}.log"
        text = (f"trt-edge {__version__}\ncommand: trt-edge {' '.join(argv)}\n"
                f"versions: {tool_versions()}\n\n"
                + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        path.write_text(text, encoding="utf-8")
        return path
    except Exception:  # noqa: BLE001 - never let the crash report hide the crash
        return None


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so temp files are removed and nothing is half-written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # not settable here (embedded interpreter)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _silence_broken_stdout() -> None:
    """After `trt-edge inspect | head` closed the pipe: no second error at interpreter exit."""
    real = sys.__stdout__
    if real is None or sys.stdout is not real:
        return  # captured (tests, an embedding program): not ours to redirect
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, real.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``trt-edge`` command; returns the exit status.

    0: done; 1: a check failed (e.g. ``compare --tolerance``) or an unexpected error
    (its traceback goes to a log file whose path is printed); 2: a user error (a bad
    file, option or path), with a message that says what to fix; 130: interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    with _log.cli_logging(_log_level(args.verbose, args.quiet)), _sigterm_as_interrupt():
        try:
            rc = args.func(args)
            sys.stdout.flush()
        except TrtEdgeError as exc:
            log.error("%s", exc)
            return 2
        except KeyboardInterrupt:
            log.error("interrupted: nothing was left half-written")
            return 130
        except BrokenPipeError:
            _silence_broken_stdout()
            return 141  # 128 + SIGPIPE, what a shell reports for `cmd | head`
        except (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError,
                FileExistsError) as exc:
            where = f" '{exc.filename}'" if exc.filename else ""
            log.error("%s%s. Check that the path exists, is the kind of file expected and is "
                      "readable/writable by you.", exc.strerror or exc, where)
            return 2
        except MemoryError:
            log.error("out of memory: use smaller inputs (--batch-size, --max-samples) or a machine "
                      "with more memory.")
            return 1
        except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback on screen
            path = _write_crash_log(argv, exc)
            where = f"; the full traceback is in {path}" if path else ""
            log.error("unexpected error: %s: %s%s. This is a bug in trt-edge: please report it "
                      "with that file and the command you ran.", type(exc).__name__,
                      str(exc).splitlines()[0][:300] if str(exc) else "", where)
            return 1
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
