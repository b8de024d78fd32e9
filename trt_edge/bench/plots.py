"""Plots of benchmark results (matplotlib, Agg backend, imported only when plotting)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._lazy import require
from ..artifacts import atomic_path
from ..errors import InvalidInputError


def latency_histogram(result: Any, path: str | os.PathLike[str], title: str | None = None,
                      bins: int = 50) -> Path:
    """Write a latency histogram PNG with the median, p90 and p99 marked; returns the path.

    Long-tailed samples (max > 10x median) get log-spaced bins and log axes.
    ``result`` is a :class:`~trt_edge.bench.latency.BenchmarkResult` run with
    ``keep_samples=True`` or a sequence of latencies in milliseconds. The file is
    written atomically.
    """
    samples: Sequence[float] | None = getattr(result, "latencies_ms", result)
    if samples is None:
        raise InvalidInputError("The benchmark kept no latency samples: run it with keep_samples=True "
                                "to plot a histogram.")
    a = np.asarray(samples, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise InvalidInputError("Need a non-empty 1-D sequence of latencies (ms) to plot.")
    matplotlib = require("matplotlib", "latency plots")
    matplotlib.use("Agg", force=False)  # no display on servers and boards
    from matplotlib.figure import Figure  # a Figure without pyplot keeps no global state

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    nbins = min(bins, max(5, a.size // 2))
    # Latency tails (a preempted call, a GC pause) can be 100x the median: then linear bins put
    # every call in one bar. Log-spaced bins and log axes keep both the body and the tail visible.
    long_tail = a.min() > 0 and a.max() > 10 * float(np.median(a))
    if long_tail:
        ax.hist(a, bins=np.geomspace(a.min(), a.max(), nbins + 1).tolist(), color="#4C72B0", alpha=0.85)
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        ax.hist(a, bins=nbins, color="#4C72B0", alpha=0.85)
    for q, style, label in ((50, "-", "median"), (90, "--", "p90"), (99, ":", "p99")):
        v = float(np.percentile(a, q))
        ax.axvline(v, color="#C44E52", linestyle=style, linewidth=1.2, label=f"{label} {v:.3f} ms")
    ax.set_xlabel("latency (ms)" + (", log scale" if long_tail else ""))
    ax.set_ylabel("calls")
    if title is None and hasattr(result, "artifact"):
        title = f"{result.artifact or 'model'} - {result.backend}, {a.size} calls"
    ax.set_title(title or f"{a.size} calls")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    dest = Path(path)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png")
    return dest


__all__ = ["latency_histogram"]
