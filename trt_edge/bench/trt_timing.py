"""trtexec-style GPU timing of a TensorRT engine.

What trtexec reports, measured the same way:

* **H2D latency**: CUDA-event time of the input copies;
* **GPU compute time**: CUDA-event time of the enqueued inference
  (``execute_async_v3`` or the CUDA-graph launch);
* **D2H latency**: CUDA-event time of the output copies;
* **enqueue time**: host wall time of the enqueue call itself (what CUDA
  graphs shrink);
* **latency**: H2D + compute + D2H of one query (end to end on the GPU timeline);
* **throughput**: queries per second of host wall time over the timed run.

Each as min/mean/median/p90/p95/p99/max. The loop, the variants and the
Jetson tegrastats sampling live here; the per-iteration event recording lives
in the runtime, behind the narrow hook ``TimedIterationHook.timed_iterations``
(``trt_edge.runtime.timing``; the TensorRT runner implements it on a borrowed
execution instance), so the runtime never imports ``bench``. The statistics
are pure NumPy and tested on every machine.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..runtime.timing import TimedIterationHook

log = logging.getLogger(__name__)

PERCENTILES = (50, 90, 95, 99)


def latency_stats(values_ms: Sequence[float]) -> dict[str, float]:
    """min/mean/median/p90/p95/p99/max/std of a sample in milliseconds.

    Percentiles use linear interpolation (NumPy's default), like trtexec's
    nearest-rank only up to interpolation on small samples.
    """
    a = np.asarray(values_ms, dtype=np.float64)
    if a.size == 0:
        raise InvalidInputError("No timings to summarise: run at least one iteration.")
    if not np.all(np.isfinite(a)):
        raise InvalidInputError("Timings contain NaN or infinity: a CUDA event was not recorded.")
    p = np.percentile(a, PERCENTILES)
    return {"min": float(a.min()), "mean": float(a.mean()), "median": float(p[0]),
            "p90": float(p[1]), "p95": float(p[2]), "p99": float(p[3]), "max": float(a.max()),
            "std": float(a.std()), "count": int(a.size)}


@dataclasses.dataclass(frozen=True)
class IterationTiming:
    """One query: GPU times from CUDA events, enqueue from the host clock (ms)."""

    h2d_ms: float
    compute_ms: float
    d2h_ms: float
    enqueue_ms: float

    @property
    def end_to_end_ms(self) -> float:
        return self.h2d_ms + self.compute_ms + self.d2h_ms


@dataclasses.dataclass
class GpuTimingOptions:
    """How long to time and what to include.

    warmup: untimed iterations first (and a CUDA-graph capture, if enabled).
    iterations / duration_s: stop at the first reached (at least ``min_iterations``).
    cuda_graph: replay a captured graph of the enqueue instead of calling
        ``execute_async_v3`` (trtexec --useCudaGraph).
    transfers: include H2D/D2H copies (trtexec --noDataTransfers when False).
    """

    warmup: int = 10
    iterations: int | None = 200
    duration_s: float | None = None
    min_iterations: int = 10
    cuda_graph: bool = False
    transfers: bool = True

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise InvalidInputError(f"warmup must be >= 0, got {self.warmup}.")
        if self.iterations is not None and self.iterations < 1:
            raise InvalidInputError(f"iterations must be >= 1, got {self.iterations}.")
        if self.iterations is None and self.duration_s is None:
            raise InvalidInputError("Give iterations or duration_s (or both).")


def summarize(timings: Sequence[IterationTiming], wall_s: float, batch: int,
              options: GpuTimingOptions) -> dict[str, Any]:
    """The trtexec-style report as a dict (stats per phase, throughput)."""
    if wall_s <= 0:
        raise InvalidInputError(f"wall time must be > 0, got {wall_s}.")
    n = len(timings)
    out: dict[str, Any] = {
        "compute_ms": latency_stats([t.compute_ms for t in timings]),
        "enqueue_ms": latency_stats([t.enqueue_ms for t in timings]),
        "end_to_end_ms": latency_stats([t.end_to_end_ms for t in timings]),
        "throughput_qps": n / wall_s,
        "throughput_samples_per_s": n * batch / wall_s,
        "iterations": n,
        "total_host_walltime_s": wall_s,
        "cuda_graph": options.cuda_graph,
        "transfers": options.transfers,
        "batch": batch,
    }
    if options.transfers:
        out["h2d_ms"] = latency_stats([t.h2d_ms for t in timings])
        out["d2h_ms"] = latency_stats([t.d2h_ms for t in timings])
    # The GPU is saturated when compute time ~ host wall time per query: say so,
    # as trtexec warns when enqueue time dominates (graphs then help).
    enq = out["enqueue_ms"]["median"]
    comp = out["compute_ms"]["median"]
    out["enqueue_bound"] = bool(enq > comp)
    return out


def run_timing_loop(step: Callable[[bool], IterationTiming], options: GpuTimingOptions,
                    batch: int = 1) -> dict[str, Any]:
    """Warm up, then call ``step(timed=True)`` until the iteration/time budget is spent."""
    for _ in range(options.warmup):
        step(False)
    deadline = None if options.duration_s is None else time.perf_counter() + options.duration_s
    timings: list[IterationTiming] = []
    start = time.perf_counter()
    while True:
        timings.append(step(True))
        n = len(timings)
        if n < options.min_iterations:
            continue
        if options.iterations is not None and n >= options.iterations:
            break
        if deadline is not None and time.perf_counter() >= deadline:
            break
    wall = time.perf_counter() - start
    return summarize(timings, wall, batch, options)


def format_report(report: Mapping[str, Any]) -> str:
    """A trtexec-like text block of a ``summarize`` result."""
    lines = [f"Throughput: {report['throughput_qps']:.2f} qps "
             f"({report['throughput_samples_per_s']:.1f} samples/s, batch {report['batch']}, "
             f"CUDA graph {'on' if report['cuda_graph'] else 'off'}, "
             f"transfers {'on' if report['transfers'] else 'off'})"]
    names = [("end_to_end_ms", "Latency"), ("enqueue_ms", "Enqueue Time"), ("h2d_ms", "H2D Latency"),
             ("compute_ms", "GPU Compute Time"), ("d2h_ms", "D2H Latency")]
    for key, title in names:
        s = report.get(key)
        if s:
            lines.append(f"{title}: min = {s['min']:.4f} ms, max = {s['max']:.4f} ms, mean = "
                         f"{s['mean']:.4f} ms, median = {s['median']:.4f} ms, percentile(90%) = "
                         f"{s['p90']:.4f} ms, percentile(95%) = {s['p95']:.4f} ms, percentile(99%) = "
                         f"{s['p99']:.4f} ms")
    if report.get("enqueue_bound"):
        lines.append("Enqueue time exceeds GPU compute time: the host is the bottleneck; try CUDA graphs.")
    return "\n".join(lines)


def benchmark_gpu(runner: Any, feed: Mapping[str, np.ndarray], warmup: int = 10,
                  iterations: int | None = 200, duration_s: float | None = None,
                  cuda_graph: bool | None = None, transfers: bool = True,
                  jetson_power: bool = True, variants: bool = True) -> dict[str, Any]:
    """trtexec-style H2D / compute / D2H / enqueue / end-to-end statistics (ms) and throughput.

    ``runner`` offers :class:`~trt_edge.runtime.timing.TimedIterationHook` (the
    TensorRT runner does, on one borrowed execution instance); ``cuda_graph``
    overrides the runner's option for this measurement only. On a Jetson
    (``tegrastats`` present) and with ``jetson_power``, the power mode is recorded
    and tegrastats is sampled during the timed run (power, energy, RAM, GPU load)
    under the ``jetson`` key. With ``variants``, the other two trtexec
    configurations are measured too (CUDA graph on/off, and GPU compute without
    transfers) and summarised under ``variants``.
    """
    from .tegrastats import TegrastatsSampler, power_mode, tegrastats_available

    if not isinstance(runner, TimedIterationHook):
        raise InvalidInputError(f"{type(runner).__name__} offers no GPU timing hook (timed_iterations): "
                                "GPU timing needs the TensorRT backend.")
    default_graph = bool(getattr(getattr(runner, "options", None), "cuda_graph", False))
    opts = GpuTimingOptions(warmup=warmup, iterations=iterations, duration_s=duration_s,
                            cuda_graph=default_graph if cuda_graph is None else bool(cuda_graph),
                            transfers=transfers)
    batch = int(next(iter(feed.values())).shape[0]) if feed and next(iter(feed.values())).ndim else 1
    sampler: Any = None
    with runner.timed_iterations(feed, cuda_graph=opts.cuda_graph, transfers=opts.transfers) as step_once:
        def step(timed: bool) -> IterationTiming:
            return IterationTiming(*step_once())

        if jetson_power and tegrastats_available():
            sampler = TegrastatsSampler(100)
        with sampler if sampler is not None else contextlib.nullcontext():
            report = run_timing_loop(step, opts, batch=batch)
    facts = runner.timing_facts()
    report.update({k: v for k, v in facts.items() if k == "zero_copy"})
    if sampler is not None:
        report["jetson"] = {"power_mode": power_mode(), **sampler.summary()}
    if variants:
        report["variants"] = _variants(runner, feed, opts, bool(facts.get("data_dependent_outputs")))
    return report


def _variants(runner: Any, feed: Mapping[str, np.ndarray], main: GpuTimingOptions,
              has_dds: bool) -> dict[str, Any]:
    """Short summaries of the graph-on/off and no-transfer configurations not measured above."""
    wanted = {"cuda_graph_off": (False, True), "cuda_graph_on": (True, True),
              "no_transfers": (not has_dds, False)}
    out: dict[str, Any] = {}
    for key, (graph, transfers) in wanted.items():
        if (graph, transfers) == (main.cuda_graph, main.transfers) or (graph and has_dds):
            continue
        r = benchmark_gpu(runner, feed, warmup=main.warmup, iterations=main.iterations,
                          duration_s=main.duration_s, cuda_graph=graph, transfers=transfers,
                          jetson_power=False, variants=False)
        out[key] = {"cuda_graph": graph, "transfers": transfers,
                    "end_to_end_median_ms": r["end_to_end_ms"]["median"],
                    "end_to_end_p99_ms": r["end_to_end_ms"]["p99"],
                    "compute_median_ms": r["compute_ms"]["median"],
                    "enqueue_median_ms": r["enqueue_ms"]["median"],
                    "throughput_qps": r["throughput_qps"]}
    return out


def gpu_breakdown(runner: Any, feed: Mapping[str, np.ndarray], *, warmup: int,
                  iterations: int | None, duration_s: float | None) -> dict[str, Any] | None:
    """The GPU breakdown ``bench.latency`` stores, or None for a runner without one.

    A runner (or test double) with its own ``benchmark_gpu`` method is asked
    through it; otherwise the timing hook is used.
    """
    own = getattr(runner, "benchmark_gpu", None)
    if callable(own):
        return dict(own(feed, warmup=warmup, iterations=iterations, duration_s=duration_s))
    if isinstance(runner, TimedIterationHook):
        return benchmark_gpu(runner, feed, warmup=warmup, iterations=iterations, duration_s=duration_s)
    return None
