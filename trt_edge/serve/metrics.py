"""Prometheus metrics of the inference service, with Triton's metric names.

Each :class:`ServeMetrics` has its own ``CollectorRegistry`` (several apps in one process do not
collide). ``serve_metrics(port)`` exposes it on its own port (Triton's ``--metrics-port``, 8002).
Counters use Triton's names (``nv_inference_request_success``, ``nv_inference_count``,
``nv_inference_exec_count``, ``nv_inference_queue_duration_us``, ...) with labels
``model``/``version``; ``trt_edge_batch_size`` is a histogram of executed batch sizes.
"""
from __future__ import annotations

import logging
from typing import Any

from .._lazy import require

log = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    def __init__(self) -> None:
        prom = require("prometheus_client", "the metrics of `trt-edge serve`")
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        labels = ("model", "version")
        r = self.registry
        self.success = prom.Counter("nv_inference_request_success", "Number of successful inference requests",
                                    labels, registry=r)
        self.failure = prom.Counter("nv_inference_request_failure", "Number of failed inference requests",
                                    labels + ("reason",), registry=r)
        self.inferences = prom.Counter("nv_inference_count", "Number of inferences performed (batch samples)",
                                       labels, registry=r)
        self.executions = prom.Counter("nv_inference_exec_count", "Number of model executions (batches)",
                                       labels, registry=r)
        self.request_us = prom.Counter("nv_inference_request_duration_us",
                                       "Cumulative inference request duration in microseconds", labels, registry=r)
        self.queue_us = prom.Counter("nv_inference_queue_duration_us",
                                     "Cumulative inference queuing duration in microseconds", labels, registry=r)
        self.compute_us = prom.Counter("nv_inference_compute_infer_duration_us",
                                       "Cumulative compute inference duration in microseconds", labels, registry=r)
        self.pending = prom.Gauge("nv_inference_pending_request_count",
                                  "Instantaneous number of pending requests awaiting execution", labels, registry=r)
        self.batch_size = prom.Histogram("trt_edge_batch_size", "Batch size of each model execution", labels,
                                         buckets=BATCH_BUCKETS, registry=r)
        self.http = prom.Counter("trt_edge_http_requests", "HTTP requests by route group and status",
                                 ("group", "status"), registry=r)
        self.drift = prom.Gauge("trt_edge_input_drift_psi", "Population stability index of recent inputs "
                                "against the version's calibration data (drift_reference.json); > 0.25: shifted",
                                labels, registry=r)

        self._children: dict[tuple[str, str], tuple[Any, ...]] = {}

    def drift_gauge(self, model: str, version: str) -> Any:
        """The setter of this version's input-drift score (PSI against its calibration data)."""
        return self.drift.labels(model=model, version=version).set

    def _of(self, model: str, version: str) -> tuple[Any, ...]:
        """The labelled children of one model version (``labels()`` is slow on the hot path)."""
        key = (model, version)
        got = self._children.get(key)
        if got is None:
            got = tuple(m.labels(model, version) for m in (
                self.executions, self.inferences, self.batch_size, self.queue_us, self.compute_us, self.success,
                self.request_us, self.pending))
            self._children[key] = got
        return got

    def execution_hook(self, model: str, version: str) -> Any:
        def hook(batch: int, requests: int, queue_ns: list[int], compute_ns: int) -> None:
            executions, inferences, batch_size, queue_us, compute_us = self._of(model, version)[:5]
            executions.inc()
            inferences.inc(batch)
            batch_size.observe(batch)
            queue_us.inc(sum(queue_ns) / 1000.0)
            compute_us.inc(compute_ns * requests / 1000.0)
        return hook

    def pending_gauge(self, model: str, version: str) -> Any:
        return self._of(model, version)[7]

    def request_done(self, model: str, version: str, ok: bool, duration_s: float, reason: str = "") -> None:
        children = self._of(model, version)
        if ok:
            children[5].inc()
        else:
            self.failure.labels(model, version, reason or "OTHER").inc()
        children[6].inc(duration_s * 1e6)

    def render(self) -> bytes:
        return self._prom.generate_latest(self.registry)

    def serve(self, host: str, port: int) -> Any:
        """Start the metrics endpoint on its own port; returns an object with ``shutdown()``."""
        server, thread = self._prom.start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, server.server_port)
        return server
