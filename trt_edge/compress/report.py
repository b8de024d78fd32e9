"""What a compression step did: parameters, FLOPs, size, task metric, ONNX Runtime latency.

:func:`measure` exports the model with :mod:`trt_edge.export` (which verifies the ONNX file
against the torch module in ONNX Runtime at two batch sizes), then times the file in ONNX
Runtime on the CPU. FLOPs are counted by Torch-Pruning's op counter (multiply-accumulates of
Conv/Linear/BN, reported as MACs).
"""
from __future__ import annotations

import dataclasses
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from .._lazy import require


@dataclasses.dataclass(frozen=True)
class StepReport:
    """One row of a compression report. ``size_bytes``: the exported FP32 ONNX file;
    ``storage_bytes``: a compact storage form where the step has one (weight sharing), else
    the ONNX size. ``metric``: the task metric (accuracy or agreement, in [0, 1]).
    ``latency_ms``: median ONNX Runtime latency (batch 1, one thread)."""

    step: str
    params: int
    macs: int
    size_bytes: int
    storage_bytes: int
    metric: float | None
    latency_ms: float | None
    onnx_path: str | None = None
    verified: bool = False
    notes: str = ""

    def row(self) -> list[str]:
        metric = "-" if self.metric is None else f"{100 * self.metric:.2f}%"
        lat = "-" if self.latency_ms is None else f"{self.latency_ms:.3f}"
        return [self.step, f"{self.params:,}", f"{self.macs / 1e6:.2f}", f"{self.size_bytes / 1024:.1f}",
                f"{self.storage_bytes / 1024:.1f}", metric, lat, "yes" if self.verified else "no"]


HEADER = ["step", "params", "MMACs", "ONNX KiB", "stored KiB", "metric", "ORT ms", "ONNX=torch"]


def format_reports(rows: Sequence[StepReport]) -> str:
    table = [HEADER] + [r.row() for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def count_params(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def count_macs(model: Any, sample: Any) -> int:
    """Multiply-accumulates of one forward pass on ``sample`` (Torch-Pruning's counter)."""
    tp = require("torch_pruning", "counting FLOPs (pip install 'trt-edge[compress]')")
    was = model.training
    model.eval()
    macs, _ = tp.utils.count_ops_and_params(model, sample)
    model.train(was)
    return int(macs)


def ort_session(path: Any, threads: int = 1, optimize: bool = True) -> Any:
    """An ONNX Runtime CPU session through the core helper (``optimize=False``: the graph as
    written, for verification; True: ORT's full optimizer, for latency)."""
    from ..ort_exec import make_session
    return make_session(path if isinstance(path, onnx.ModelProto) else str(path),
                        optimization="all" if optimize else "disabled", intra_op_threads=threads)


def ort_run(path: str | os.PathLike[str], x: np.ndarray, batch_size: int = 256,
            optimize: bool = False) -> np.ndarray:
    """The model's first output on ``x`` in ONNX Runtime (batched)."""
    sess = ort_session(path, threads=1, optimize=optimize)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: np.ascontiguousarray(x[i:i + batch_size])})[0]
                           for i in range(0, len(x), batch_size)])


def ort_latency_ms(path: str | os.PathLike[str], sample: np.ndarray, runs: int = 50, warmup: int = 5,
                   threads: int = 1) -> float:
    """Median latency (ms) of one ``sample`` batch in ONNX Runtime on the CPU."""
    sess = ort_session(path, threads=threads)
    name = sess.get_inputs()[0].name
    feed = {name: np.ascontiguousarray(sample)}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        sess.run(None, feed)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return float(statistics.median(times))


def export_verified(model: Any, sample: np.ndarray, path: str | os.PathLike[str]) -> Any:
    """Export with :func:`trt_edge.export.export_onnx` (TorchScript exporter, opset 17, dynamic
    batch, verified against torch in ONNX Runtime); returns the ExportResult."""
    torch = require("torch", "exporting")
    from ..export import ExportOptions, export_onnx
    return export_onnx(model, torch.from_numpy(np.ascontiguousarray(sample)), path,
                       ExportOptions(exporter="torchscript", opset=17, input_names=["input"],
                                     output_names=["output"]))


def measure(step: str, model: Any, sample: np.ndarray, metric: Callable[[Any], float] | None = None,
            out_dir: str | os.PathLike[str] | None = None, storage_bytes: int | None = None,
            latency_runs: int = 50, notes: str = "") -> StepReport:
    """Export ``model`` (verified), count it, evaluate ``metric(model)`` and time it in ORT.

    ``sample``: one input batch (the latency is timed on its first row). The ONNX file is
    kept in ``out_dir`` as ``<step>.onnx`` (a temporary directory when None).
    """
    torch = require("torch", "compression reports")
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="trt_edge_compress_")
        out_dir = tmp.name
    try:
        path = Path(out_dir) / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', step)}.onnx"
        result = export_verified(model, sample[:2], path)
        size = path.stat().st_size
        lat = ort_latency_ms(path, sample[:1], runs=latency_runs) if latency_runs else None
        value = metric(model) if metric is not None else None
        macs = count_macs(model, torch.from_numpy(np.ascontiguousarray(sample[:1])))
        return StepReport(step, count_params(model), macs, size, storage_bytes or size, value, lat,
                          None if tmp is not None else str(path), result.verified, notes)
    finally:
        if tmp is not None:
            tmp.cleanup()
