"""Latency / throughput benchmark of any Runner.

Warm-up first, then a fixed number of iterations or a time budget, timed per
call with ``time.perf_counter_ns`` (wall-clock around ``runner.infer``, so it is
what an embedding application sees: host copies included, input validation
excluded - the feed is validated once before timing). With ``threads > 1``,
that many callers share one runner and throughput is calls / wall time.

GPU runners add a breakdown: a runner offering the runtime's timing hook
(``trt_edge.runtime.timing.TimedIterationHook``; the TensorRT runner does) is
timed by ``bench.trt_timing.benchmark_gpu``, and a runner with its own
``benchmark_gpu(feed, warmup=..., iterations=..., duration_s=...)`` method is
asked through it. The dict (keys such as ``h2d_ms``, ``compute_ms``,
``d2h_ms``, ``enqueue_ms``, each a stats dict, plus anything else measured) is
stored under ``gpu`` in the result and its JSON.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import onnx

from ..artifacts import atomic_write_json, machine_info, model_hash, sha256_file, to_jsonable, tool_versions
from ..errors import InvalidInputError
from ..log import progress
from ..runtime.base import Runner
from ..runtime.factory import open_runner
from ..runtime.onnxrt import OrtOptions
from .inputs import InputOptions, batch_size_of, make_feed

log = logging.getLogger(__name__)

RESULT_SCHEMA = 1
#: Keys a runner's ``benchmark_gpu`` is expected to fill (each optional).
GPU_FIELDS = ("h2d_ms", "compute_ms", "d2h_ms", "enqueue_ms", "end_to_end_ms")


@dataclasses.dataclass
class BenchmarkOptions:
    """What to run and for how long.

    ``warmup``: untimed calls first (caches, allocator, thread pools, lazy init).
    ``iterations``: timed calls; ``duration_s``: a time budget. With both, the
    run stops at whichever comes first; with only ``duration_s``, it runs until
    the budget is spent. At least ``min_iterations`` calls are always timed.
    ``threads``: concurrent callers sharing the runner (1 = plain latency).
    ``inputs``: the feed (file or random with shapes/batch, see InputOptions).
    ``gpu_timing``: ask a runner with ``benchmark_gpu`` for its GPU breakdown.
    ``keep_samples``: store every latency in the result (for plots and JSON).
    """

    warmup: int = 10
    iterations: int | None = 100
    duration_s: float | None = None
    min_iterations: int = 5
    threads: int = 1
    inputs: InputOptions = dataclasses.field(default_factory=InputOptions)
    gpu_timing: bool = True
    show_progress: bool = True
    keep_samples: bool = True

    def __post_init__(self) -> None:
        if self.iterations is None and self.duration_s is None:
            raise InvalidInputError("Give iterations or duration_s (or both) for the benchmark.")
        if self.iterations is not None and self.iterations < 1:
            raise InvalidInputError(f"iterations must be >= 1, got {self.iterations}.")
        if self.duration_s is not None and not self.duration_s > 0:
            raise InvalidInputError(f"duration_s must be > 0, got {self.duration_s}.")
        if self.warmup < 0:
            raise InvalidInputError(f"warmup must be >= 0, got {self.warmup}.")
        if self.threads < 1:
            raise InvalidInputError(f"threads must be >= 1, got {self.threads}.")
        if self.min_iterations < 1:
            raise InvalidInputError(f"min_iterations must be >= 1, got {self.min_iterations}.")
        if self.iterations is not None:
            self.min_iterations = min(self.min_iterations, self.iterations)


@dataclasses.dataclass
class LatencyStats:
    """Latency figures in milliseconds."""

    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float
    std: float

    @classmethod
    def from_samples(cls, samples_ms: np.ndarray | list[float]) -> "LatencyStats":
        a = np.asarray(samples_ms, dtype=np.float64)
        if a.size == 0:
            raise InvalidInputError("No latency samples to summarise.")
        p = np.percentile(a, [50, 90, 95, 99])
        return cls(min=float(a.min()), mean=float(a.mean()), median=float(p[0]), p90=float(p[1]),
                   p95=float(p[2]), p99=float(p[3]), max=float(a.max()), std=float(a.std()))


@dataclasses.dataclass
class BenchmarkResult:
    """One benchmark run, with everything needed to reproduce and compare it."""

    artifact: str | None
    artifact_sha256: str | None
    backend: str
    runner: dict[str, Any]
    input_shapes: dict[str, list[int]]
    input_dtypes: dict[str, str]
    batch_size: int
    threads: int
    warmup: int
    iterations: int
    total_time_s: float
    latency_ms: LatencyStats
    throughput_per_s: float      # inferences (calls) per second
    samples_per_s: float         # throughput_per_s * batch_size
    options: dict[str, Any]
    machine: dict[str, Any]
    tool_versions: dict[str, str]
    created: str
    gpu: dict[str, Any] | None = None
    latencies_ms: list[float] | None = None
    schema: int = RESULT_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the result as JSON, atomically."""
        return atomic_write_json(path, self.to_dict())

    def table(self) -> str:
        s = self.latency_ms
        rows = [
            f"artifact     {self.artifact or '(in memory)'}",
            f"backend      {self.backend} ({_backend_detail(self.runner)})",
            "inputs       " + ", ".join(f"{k}{tuple(v)} {self.input_dtypes[k]}"
                                         for k, v in self.input_shapes.items()),
            f"iterations   {self.iterations} timed after {self.warmup} warm-up, {self.threads} thread(s), "
            f"{self.total_time_s:.2f} s",
            f"latency ms   min {s.min:.3f}  mean {s.mean:.3f}  median {s.median:.3f}  p90 {s.p90:.3f}  "
            f"p95 {s.p95:.3f}  p99 {s.p99:.3f}  max {s.max:.3f}",
            f"throughput   {self.throughput_per_s:.1f} inferences/s  ({self.samples_per_s:.1f} samples/s at "
            f"batch {self.batch_size})",
        ]
        if self.gpu:
            for key in GPU_FIELDS:
                val = self.gpu.get(key)
                if isinstance(val, Mapping) and "median" in val:
                    rows.append(f"gpu {key:<9}median {val['median']:.3f}  p90 {val.get('p90', math.nan):.3f}  "
                                f"p99 {val.get('p99', math.nan):.3f}")
                elif isinstance(val, (int, float)):
                    rows.append(f"gpu {key:<9}{val:.3f}")
        return "\n".join(rows)


def _backend_detail(desc: Mapping[str, Any]) -> str:
    bits = []
    if desc.get("providers"):
        bits.append(",".join(desc["providers"]))
    for key in ("intra_op_threads", "io_binding", "precision", "device"):
        if key in desc:
            bits.append(f"{key}={desc[key]}")
    return "; ".join(bits) or desc.get("runner", "")


def _artifact_identity(artifact: Any, runner: Runner) -> tuple[str | None, str | None]:
    source = artifact if not isinstance(artifact, Runner) else getattr(runner, "model", None) or \
        getattr(runner, "path", None) or getattr(runner, "engine_path", None)
    if isinstance(source, onnx.ModelProto):
        return None, model_hash(source)
    if isinstance(source, bytes):
        import hashlib
        return None, hashlib.sha256(source).hexdigest()
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        return os.fspath(source), sha256_file(source)
    return (os.fspath(source) if isinstance(source, (str, os.PathLike)) else None), None


def _time_sequential(runner: Runner, feed: dict[str, np.ndarray], options: BenchmarkOptions,
                     deadline_ns: int | None) -> list[int]:
    samples: list[int] = []

    def schedule() -> Iterator[int]:
        i = 0
        while True:
            if options.iterations is not None and i >= options.iterations:
                return
            if deadline_ns is not None and i >= options.min_iterations and time.perf_counter_ns() >= deadline_ns:
                return
            yield i
            i += 1

    total = options.iterations if options.duration_s is None else None
    for _ in progress(schedule(), total=total, description=f"benchmark {runner.name}",
                      enabled=options.show_progress):
        t0 = time.perf_counter_ns()
        runner.infer(feed, check_inputs=False)
        samples.append(time.perf_counter_ns() - t0)
    return samples


def _time_threaded(runner: Runner, feed: dict[str, np.ndarray], options: BenchmarkOptions,
                   deadline_ns: int | None) -> list[int]:
    samples: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    done: queue.Queue[int | None] = queue.Queue()
    started = 0

    def claim() -> bool:
        nonlocal started
        with lock:
            if errors:
                return False
            if options.iterations is not None and started >= options.iterations:
                return False
            if deadline_ns is not None and started >= options.min_iterations and \
                    time.perf_counter_ns() >= deadline_ns:
                return False
            started += 1
            return True

    def worker() -> None:
        try:
            while claim():
                t0 = time.perf_counter_ns()
                runner.infer(feed, check_inputs=False)
                dt = time.perf_counter_ns() - t0
                with lock:
                    samples.append(dt)
                done.put(1)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            with lock:
                errors.append(exc)
        finally:
            done.put(None)

    workers = [threading.Thread(target=worker, name=f"bench-{i}", daemon=True) for i in range(options.threads)]
    for w in workers:
        w.start()

    def completions() -> Iterator[int]:
        finished = 0
        while finished < len(workers):
            item = done.get()
            if item is None:
                finished += 1
            else:
                yield item

    total = options.iterations if options.duration_s is None else None
    for _ in progress(completions(), total=total, description=f"benchmark {runner.name} x{options.threads}",
                      enabled=options.show_progress):
        pass
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return samples


def run_benchmark(runner: Runner, feed: Mapping[str, np.ndarray], options: BenchmarkOptions
                  ) -> tuple[list[float], float, dict[str, Any] | None]:
    """Time an *active* runner on ``feed``: (latencies in ms, wall seconds, gpu breakdown or None)."""
    checked = runner.validate_inputs(feed)
    for _ in range(options.warmup):
        runner.infer(checked, check_inputs=False)
    deadline = None if options.duration_s is None else time.perf_counter_ns() + int(options.duration_s * 1e9)
    start = time.perf_counter_ns()
    if options.threads == 1:
        ns = _time_sequential(runner, checked, options, deadline)
    else:
        ns = _time_threaded(runner, checked, options, deadline)
    wall_s = (time.perf_counter_ns() - start) / 1e9
    gpu = None
    if options.gpu_timing:
        from .trt_timing import gpu_breakdown  # the runtime's timing hook, driven from bench

        gpu = gpu_breakdown(runner, checked, warmup=options.warmup, iterations=options.iterations,
                            duration_s=options.duration_s)
    return [v / 1e6 for v in ns], wall_s, gpu


def benchmark(artifact: Any, options: BenchmarkOptions | None = None, *, backend: str = "auto",
              ort_options: OrtOptions | None = None, trt_options: Any = None) -> BenchmarkResult:
    """Benchmark an artifact (.onnx, engine, ModelProto) or a Runner.

    A runner passed in inactive is activated for the run and released after;
    an active one is left active. The result records backend, ``runner.describe()``,
    machine, tool versions and the artifact's SHA-256.
    """
    options = options or BenchmarkOptions()
    runner = open_runner(artifact, backend, ort_options=ort_options, trt_options=trt_options)
    owns = not runner.is_active
    if owns:
        runner.activate()
    try:
        feed = runner.validate_inputs(make_feed(runner.input_specs(), options.inputs))
        latencies, wall_s, gpu = run_benchmark(runner, feed, options)
        description = runner.describe()
    finally:
        if owns:
            runner.deactivate()
    name, digest = _artifact_identity(artifact, runner)
    batch = batch_size_of(feed)
    calls = len(latencies)
    throughput = calls / wall_s if wall_s > 0 else math.inf
    return BenchmarkResult(
        artifact=name, artifact_sha256=digest, backend=runner.backend, runner=description,
        input_shapes={k: list(v.shape) for k, v in feed.items()},
        input_dtypes={k: v.dtype.name for k, v in feed.items()},
        batch_size=batch, threads=options.threads, warmup=options.warmup, iterations=calls,
        total_time_s=wall_s, latency_ms=LatencyStats.from_samples(latencies),
        throughput_per_s=throughput, samples_per_s=throughput * batch,
        options=_options_record(options), machine=machine_info(), tool_versions=tool_versions(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        gpu=to_jsonable(gpu) if gpu is not None else None,
        latencies_ms=latencies if options.keep_samples else None)


def _options_record(options: BenchmarkOptions) -> dict[str, Any]:
    rec = to_jsonable(options)
    inputs = options.inputs.inputs
    if inputs is not None and not isinstance(inputs, (str, os.PathLike)):
        rec["inputs"]["inputs"] = "(arrays given in Python)"  # never dump tensors into the JSON
    return rec


__all__ = ["BenchmarkOptions", "BenchmarkResult", "LatencyStats", "benchmark", "run_benchmark", "GPU_FIELDS"]
