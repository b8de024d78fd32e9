"""trt-edge inspect: what is in a model (I/O, opsets, ops, parameters, size)."""
from __future__ import annotations

import argparse
import json
import logging

ORDER = 70
log = logging.getLogger("trt_edge")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="print a model's inputs/outputs, opsets, op histogram, parameters, size",
                       description="Summarise an ONNX model without loading its weights (or an engine "
                                   "from its sidecar): inputs/outputs, IR and opset versions, producer, "
                                   "op histogram, parameter count and size on disk incl. external data.")
    p.add_argument("model", help="model.onnx (or an engine .plan with its sidecar)")
    p.add_argument("--json", help="write the summary JSON here")
    p.add_argument("--format", choices=["table", "json"], default="table", help="stdout format")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..artifacts import atomic_write_json
    from ..bench.inspect import inspect_artifact

    summary = inspect_artifact(args.model)
    if args.format == "json":
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(summary.table())
    if args.json:
        log.info("wrote %s", atomic_write_json(args.json, summary.to_dict()))
    return 0
