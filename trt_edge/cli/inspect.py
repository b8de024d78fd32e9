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


def _check(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ..errors import InvalidInputError
    from ._paths import check_paths

    p = Path(args.model)
    if p.is_file() and p.stat().st_size == 0:
        raise InvalidInputError(f"'{p}' is empty (0 bytes): not a model. Re-export it or check the path.")
    check_paths({"model": args.model}, {"--json": args.json})


def run(args: argparse.Namespace) -> int:
    from ..artifacts import atomic_write_json
    from ..bench.inspect import inspect_artifact

    _check(args)
    summary = inspect_artifact(args.model)
    if summary.to_dict().get("ir_version") == 0 and str(args.model).lower().endswith(".onnx"):
        from ..errors import InvalidInputError
        raise InvalidInputError(f"'{args.model}' is not an ONNX model (it parses as an empty one: no IR "
                                "version, no graph). Re-export it or check that the file is complete.")
    if args.format == "json":
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(summary.table())
    if args.json:
        log.info("wrote %s", atomic_write_json(args.json, summary.to_dict()))
    return 0
