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
import time
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InvalidInputError, RunnerError
from ..onnx_io import TensorSpec

log = logging.getLogger(__name__)

Feed = Mapping[str, np.ndarray]


class Runner(abc.ABC):
    """Base class of all runners.

    Subclasses implement ``activate_impl``, ``deactivate_impl``, ``infer_impl``,
    ``input_specs_impl`` and ``output_specs_impl``. ``infer`` may be called from
    several threads at once only if the subclass sets ``thread_safe = True``;
    otherwise calls are serialised by a lock.
    """

    backend: str = "abstract"
    thread_safe: bool = False

    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__
        self._active = False
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.last_inference_time_s: float | None = None

    # ---- life cycle -------------------------------------------------------------
    @property
    def is_active(self) -> bool:
        return self._active

    def activate(self) -> "Runner":
        if self._active:
            raise RunnerError(f"Runner '{self.name}' is already active; deactivate it before "
                              "activating again.")
        self.activate_impl()
        self._active = True
        return self

    def deactivate(self) -> None:
        """Release resources. Safe to call twice."""
        if not self._active:
            return
        try:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            self.deactivate_impl()
        finally:
            self._active = False

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
        """Check names, dtypes and shapes; return the feed as contiguous arrays."""
        if not isinstance(feed, Mapping):
            raise InvalidInputError(f"Inputs must be a mapping of name -> array, got {type(feed).__name__}.")
        specs = {s.name: s for s in self.input_specs()}
        unknown = sorted(set(feed) - set(specs))
        missing = sorted(set(specs) - set(feed))
        if unknown or missing:
            expected = ", ".join(s.describe() for s in specs.values())
            raise InvalidInputError(
                f"Input names do not match the model: "
                + (f"unknown {unknown}; " if unknown else "")
                + (f"missing {missing}; " if missing else "")
                + f"the model expects {expected}.")
        out: dict[str, np.ndarray] = {}
        for name, spec in specs.items():
            arr = feed[name]
            if not isinstance(arr, np.ndarray):
                arr = np.asarray(arr)
            if arr.dtype != spec.dtype:
                raise InvalidInputError(
                    f"Input '{name}' has dtype {arr.dtype} but the model expects {spec.dtype}: "
                    f"convert it with arr.astype(np.{spec.dtype.name}).")
            if spec.shape is not None:
                if arr.ndim != len(spec.shape):
                    raise InvalidInputError(
                        f"Input '{name}' has {arr.ndim} dimensions {arr.shape} but the model expects "
                        f"{len(spec.shape)}: {spec.describe()}.")
                for axis, (got, want) in enumerate(zip(arr.shape, spec.shape)):
                    if isinstance(want, int) and want >= 0 and got != want:
                        raise InvalidInputError(
                            f"Input '{name}' has size {got} on axis {axis} but the model requires "
                            f"{want}: {spec.describe()} (got shape {arr.shape}).")
            out[name] = np.ascontiguousarray(arr)
        return out

    def infer(self, feed: Feed, check_inputs: bool = True) -> dict[str, np.ndarray]:
        """Run one inference; returns output name -> array (owned by the caller)."""
        self._check_active()
        feed = self.validate_inputs(feed) if check_inputs else dict(feed)
        start = time.perf_counter()
        if self.thread_safe:
            outputs = self.infer_impl(feed)
        else:
            with self._lock:
                outputs = self.infer_impl(feed)
        self.last_inference_time_s = time.perf_counter() - start
        return outputs

    # ---- concurrency ------------------------------------------------------------
    def _pool(self, max_workers: int | None = None) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=max_workers or 4, thread_name_prefix=f"{self.name}-infer")
            return self._executor

    def infer_async(self, feed: Feed) -> concurrent.futures.Future[dict[str, np.ndarray]]:
        """Submit one inference to the runner's thread pool; returns a Future."""
        self._check_active()
        return self._pool().submit(self.infer, feed)

    async def infer_aio(self, feed: Feed) -> dict[str, np.ndarray]:
        """``await runner.infer_aio(feed)`` from asyncio code without blocking the loop."""
        return await asyncio.wrap_future(self.infer_async(feed))

    def infer_batch(self, feeds: Sequence[Feed], num_threads: int = 1) -> list[dict[str, np.ndarray]]:
        """Run many feeds, ``num_threads`` at a time; results keep the input order."""
        self._check_active()
        if num_threads < 1:
            raise InvalidInputError(f"num_threads must be >= 1, got {num_threads}.")
        if num_threads == 1:
            return [self.infer(f) for f in feeds]
        with concurrent.futures.ThreadPoolExecutor(max_workers=num_threads,
                                                   thread_name_prefix=f"{self.name}-batch") as pool:
            return list(pool.map(self.infer, feeds))

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
        return {"backend": self.backend, "runner": self.name}
