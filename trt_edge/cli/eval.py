"""trt-edge eval: accuracy and per-class precision/recall/F1 on labelled data."""
from __future__ import annotations

import argparse
import logging

ORDER = 60
log = logging.getLogger("trt_edge")


def register(sub: argparse._SubParsersAction) -> None:
    from ._runner_args import add_runner_args

    p = sub.add_parser("eval", help="task metrics (accuracy, precision/recall/F1) on labelled data",
                       description="Run a classifier over labelled data and report accuracy, top-k "
                                   "accuracy, per-class precision/recall/F1 and the confusion matrix. "
                                   "LABELLED is a .npz with 'y' (class ids) and 'x' or one array per "
                                   "input name.")
    p.add_argument("artifact", help="model.onnx or engine .plan/.engine")
    p.add_argument("--data", required=True, metavar="LABELLED.npz", help="labelled data")
    p.add_argument("--batch-size", type=int, default=256, help="rows per inference (default 256)")
    p.add_argument("--output", help="output holding the class scores (default: the first)")
    p.add_argument("--top-k", type=int, default=5, help="also report top-k accuracy (default 5)")
    p.add_argument("--limit", type=int, help="evaluate the first N rows only")
    p.add_argument("--class-names", help="comma-separated class names for the table")
    p.add_argument("--json", help="write the metrics JSON here")
    add_runner_args(p, inputs=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.evaluate import EvalOptions, evaluate
    from ._runner_args import ort_options

    opts = EvalOptions(batch_size=args.batch_size, output=args.output, top_k=args.top_k, limit=args.limit,
                       class_names=args.class_names.split(",") if args.class_names else None)
    result = evaluate(args.artifact, args.data, opts, backend=args.backend, ort_options=ort_options(args))
    print(result.table())
    if args.json:
        log.info("wrote %s", result.save_json(args.json))
    return 0
