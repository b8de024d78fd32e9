"""``trt-edge optimize IN.onnx -o OUT.onnx``: run the checked graph-pass pipeline."""
from __future__ import annotations

import argparse
import sys

ORDER = 20


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [n.strip() for n in text.split(",") if n.strip()]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "optimize", help="graph passes: fold constants/BN, fuse, simplify, with checks after each",
        description="Run graph passes on an ONNX model. After every pass the model is checked "
                    "(ONNX checker, strict shape inference) and, unless --no-verify, compared with "
                    "the original in ONNX Runtime (rtol 1e-5, atol 1e-6). Nothing is written if a "
                    "check fails.")
    p.add_argument("model", nargs="?", help="input ONNX file")
    p.add_argument("-o", "--output", help="output ONNX file (a .json sidecar is written beside it)")
    p.add_argument("--passes", help="comma-separated passes to run, in order (default: the default "
                                    "pipeline; see --list-passes)")
    p.add_argument("--skip", default="", help="comma-separated passes to leave out")
    p.add_argument("--verify", dest="verify", action="store_true", default=True,
                   help="compare outputs with the original after each pass (default)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the numerical comparison")
    p.add_argument("--no-check", dest="check", action="store_false", default=True,
                   help="skip the ONNX checker / strict shape inference after each pass")
    p.add_argument("--inputs", action="append", default=[],
                   help="real inputs (.npz, one array per input name) also used for verification; repeatable")
    p.add_argument("--shapes", help="input shapes for the random verification feeds, "
                                    "e.g. input:1x3x224x224")
    p.add_argument("--max-rounds", type=int, default=3, help="repeat the pipeline until it converges, "
                                                             "at most this often (default 3)")
    p.add_argument("--report-json", help="also write the report as JSON here")
    p.add_argument("--list-passes", action="store_true", help="list the available passes and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..artifacts import atomic_write_json
    from ..errors import InvalidInputError
    from ..graph import OptimizeOptions, list_passes, optimize_file
    from ..onnx_io import load_feeds, parse_shapes

    if args.list_passes:
        print(f"{'pass':<22}{'default':>8}{'order':>7}  description")
        for gp in list_passes():
            print(f"{gp.name:<22}{'yes' if gp.default else 'no':>8}{gp.order:>7}  {gp.description}")
        return 0
    if not args.model or not args.output:
        raise InvalidInputError("Give the input model and -o OUTPUT.onnx (or --list-passes).")
    real = [load_feeds(p) for p in args.inputs]
    options = OptimizeOptions(passes=_names(args.passes), skip=_names(args.skip) or [],
                              verify=args.verify, check=args.check, max_rounds=args.max_rounds,
                              shapes=parse_shapes(args.shapes), real_inputs=real)
    report = optimize_file(args.model, args.output, options)
    sys.stdout.write(report.table() + "\n")
    if args.report_json:
        atomic_write_json(args.report_json, report.to_dict())
    return 0
