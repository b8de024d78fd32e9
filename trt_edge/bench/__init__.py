"""Benchmark, compare, evaluate and inspect models on any runner.

- :func:`benchmark` (latency percentiles, throughput, JSON) in ``latency``;
- :func:`compare` (two runners, or a torch module and a runner, on the same inputs) in ``compare``;
- :func:`evaluate` (accuracy, per-class precision/recall/F1 on labelled data) in ``evaluate``;
- :func:`inspect_artifact` (I/O, opsets, op histogram, parameters, size) in ``inspect``;
- :func:`latency_histogram` (PNG, matplotlib imported lazily) in ``plots``.
"""
from .compare import CompareOptions, CompareResult, compare
from .evaluate import EvalOptions, EvalResult, classification_metrics, evaluate
from .inputs import InputOptions, make_feed
from .inspect import inspect_artifact, summarize_model
from .latency import BenchmarkOptions, BenchmarkResult, LatencyStats, benchmark
from .plots import latency_histogram

__all__ = ["BenchmarkOptions", "BenchmarkResult", "LatencyStats", "benchmark", "CompareOptions",
           "CompareResult", "compare", "EvalOptions", "EvalResult", "classification_metrics", "evaluate",
           "InputOptions", "make_feed", "inspect_artifact", "summarize_model", "latency_histogram"]
