"""trt-edge bench: latency percentiles and throughput of a model or engine."""
from __future__ import annotations

import argparse
import logging

ORDER = 40
log = logging.getLogger("trt_edge")


def register(sub: argparse._SubParsersAction) -> None:
    from ._runner_args import add_runner_args

    p = sub.add_parser("bench", help="measure latency (min/mean/median/p90/p95/p99) and throughput",
                       description="Benchmark an .onnx model (ONNX Runtime) or a TensorRT engine: warm-up, "
                                   "then N iterations or a time budget; prints a table and says which "
                                   "backend ran; --json writes every figure with machine and versions.")
    p.add_argument("artifact", help="model.onnx or engine .plan/.engine")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls first (default 10)")
    p.add_argument("--iterations", type=int, help="timed calls (default 100 unless --duration)")
    p.add_argument("--duration", type=float, help="time budget in seconds (stops at the first of the two)")
    p.add_argument("--threads", type=int, default=1, help="concurrent callers sharing the runner (default 1)")
    p.add_argument("--json", help="write the result JSON here")
    p.add_argument("--plot", help="write a latency histogram PNG here")
    p.add_argument("--no-gpu-timing", action="store_true",
                   help="skip the runner's GPU breakdown (H2D/compute/D2H) even if it has one")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    add_runner_args(p)
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    """Limits and paths before anything runs (trt_edge.cli._validate / _paths)."""
    from ..errors import InvalidInputError
    from . import _validate
    from ._runner_args import check_runner_paths

    _validate.at_least("--warmup", args.warmup, 0)
    _validate.at_least("--iterations", args.iterations, 1)
    _validate.at_least("--threads", args.threads, 1)
    if args.duration is not None and not args.duration > 0:
        raise InvalidInputError(f"--duration must be > 0 seconds, got {args.duration}.")
    check_runner_paths(args, [("model", args.artifact)], {"--json": args.json, "--plot": args.plot}, [])


def run(args: argparse.Namespace) -> int:
    from ..bench.latency import BenchmarkOptions, benchmark
    from ._runner_args import input_options, ort_options

    _check(args)
    iterations = args.iterations if args.iterations is not None else (None if args.duration else 100)
    opts = BenchmarkOptions(warmup=args.warmup, iterations=iterations, duration_s=args.duration,
                            threads=args.threads, inputs=input_options(args),
                            gpu_timing=not args.no_gpu_timing, show_progress=not args.no_progress,
                            keep_samples=True)
    result = benchmark(args.artifact, opts, backend=args.backend, ort_options=ort_options(args))
    print(result.table())
    if args.json:
        path = result.save_json(args.json)
        log.info("wrote %s", path)
    if args.plot:
        from ..bench.plots import latency_histogram
        path = latency_histogram(result, args.plot)
        log.info("wrote %s", path)
    return 0
