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
    verify = p.add_mutually_exclusive_group()
    verify.add_argument("--verify", dest="verify", action="store_true", default=True,
                        help="compare outputs with the original after each pass (default)")
    verify.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the numerical comparison")
    p.add_argument("--no-check", dest="check", action="store_false", default=True,
                   help="skip the ONNX checker / strict shape inference after each pass")
    p.add_argument("--inputs", action="append", default=[],
                   help="real inputs (.npz, one array per input name) to verify on INSTEAD of generated "
                        "feeds; repeatable")
    p.add_argument("--shapes", help="shapes and values for the generated verification feeds, "
                                    "e.g. input:1x3x224x224 (x:scalar for a 0-d input, sr=16000 for a value)")
    p.add_argument("--rtol", type=float, default=None,
                   help="relative tolerance of the numerical check (default 1e-5)")
    p.add_argument("--atol", type=float, default=None,
                   help="absolute tolerance of the numerical check (default 1e-6)")
    p.add_argument("--size-threshold", type=_size, default=str(16 << 20), metavar="BYTES",
                   help="do not fold a constant into a tensor over BYTES that is larger than what it is "
                        "computed from, so the file does not grow (default 16777216; 'none': no limit)")
    p.add_argument("--max-rounds", type=int, default=3, help="repeat the pipeline until it converges, "
                                                             "at most this often (default 3)")
    p.add_argument("--report-json", help="also write the report as JSON here")
    p.add_argument("--list-passes", action="store_true", help="list the available passes and exit")
    p.set_defaults(func=run)


def _size(text: str) -> int | None:
    if text.strip().lower() in ("none", "inf", "unlimited"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of bytes or 'none', got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 bytes (or 'none'), got {value}")
    return value


def _check(args: argparse.Namespace) -> None:
    """Paths, limits and --shapes names, before the passes run (trt_edge.cli._paths/_validate)."""
    from ..artifacts import load_onnx
    from ..onnx_io import graph_inputs, parse_shapes
    from . import _validate
    from ._paths import Output, check_paths

    _validate.at_least("--max-rounds", args.max_rounds, 1)
    _validate.finite_at_least("--rtol", args.rtol, 0.0)
    _validate.finite_at_least("--atol", args.atol, 0.0)
    check_paths([("model", args.model)] + [("--inputs", p) for p in args.inputs],
                {"-o": Output(args.output, sidecar=True, companions=(".data",)),
                 "--report-json": args.report_json})
    if args.shapes:
        names = [s.name for s in graph_inputs(load_onnx(args.model, load_external_data=False))]
        _validate.known_names("--shapes", parse_shapes(args.shapes), names)


def _real_feeds(args: argparse.Namespace) -> list[dict]:  # type: ignore[type-arg]
    """The --inputs files; a .npy (one unnamed array) is the model's only input."""
    from ..artifacts import load_onnx
    from ..errors import InvalidInputError
    from ..onnx_io import graph_inputs, load_feeds

    feeds = [load_feeds(p) for p in args.inputs]
    if any("" in f for f in feeds):
        names = [s.name for s in graph_inputs(load_onnx(args.model, load_external_data=False))]
        if len(names) != 1:
            raise InvalidInputError(f"A .npy input fits a model with one input; this one has {names}: "
                                    "use a .npz with one array per input name.")
        feeds = [{names[0] if k == "" else k: v for k, v in f.items()} for f in feeds]
    return feeds


def run(args: argparse.Namespace) -> int:
    from ..artifacts import atomic_write_json
    from ..errors import InvalidInputError
    from ..graph import OptimizeOptions, list_passes, optimize_file
    from ..numerics import FP32_EXACT, Tolerance
    from ..onnx_io import parse_input_specs

    if args.list_passes:
        print(f"{'pass':<22}{'default':>8}{'order':>7}  description")
        for gp in list_passes():
            print(f"{gp.name:<22}{'yes' if gp.default else 'no':>8}{gp.order:>7}  {gp.description}")
        return 0
    if not args.model or not args.output:
        raise InvalidInputError("Give the input model and -o OUTPUT.onnx (or --list-passes).")
    _check(args)
    real = _real_feeds(args)
    specs = parse_input_specs(args.shapes)
    tolerance = Tolerance(FP32_EXACT.rtol if args.rtol is None else args.rtol,
                          FP32_EXACT.atol if args.atol is None else args.atol)
    options = OptimizeOptions(passes=_names(args.passes), skip=_names(args.skip) or [],
                              verify=args.verify, check=args.check, max_rounds=args.max_rounds,
                              shapes=specs.shapes, input_values=specs.values, real_inputs=real,
                              # real inputs replace the generated feeds (only what the user gave)
                              verify_dim_sizes=() if real else (2, 3), tolerance=tolerance,
                              size_threshold=args.size_threshold)
    report = optimize_file(args.model, args.output, options)
    sys.stdout.write(report.table() + "\n")
    if args.report_json:
        atomic_write_json(args.report_json, report.to_dict())
    return 0
