"""trt-edge compare: run two models (or a torch module and a model) on the same inputs."""
from __future__ import annotations

import argparse
import logging

ORDER = 50
log = logging.getLogger("trt_edge")


def register(sub: argparse._SubParsersAction) -> None:
    from ._runner_args import add_runner_args

    p = sub.add_parser("compare", help="compare the outputs of two models on the same inputs",
                       description="Run REFERENCE and CANDIDATE on identical inputs (random, or --inputs) "
                                   "and report per output: max abs/rel error, normalised MSE, SQNR (dB), "
                                   "cosine and, for classifiers, top-1 agreement. With --torch the "
                                   "reference is a torch module and only CANDIDATE is given. Exit code 1 "
                                   "when --tolerance is given and an output is outside it.")
    p.add_argument("artifacts", nargs="+", metavar="MODEL",
                   help="REFERENCE CANDIDATE (.onnx or engines), or only CANDIDATE with --torch")
    p.add_argument("--torch", metavar="MODULE:FACTORY",
                   help="reference torch module from a factory taking no arguments, "
                        "e.g. mypkg.models:build_model or path/to/file.py:build_model")
    p.add_argument("--runs", type=int, default=1, help="random input sets, pooled (default 1)")
    p.add_argument("--tolerance", choices=["fp32", "export", "fp16"],
                   help="also check each element against this tolerance (pass/fail)")
    p.add_argument("--rtol", type=float, help="custom relative tolerance (with --atol)")
    p.add_argument("--atol", type=float, help="custom absolute tolerance (with --rtol)")
    cls = p.add_mutually_exclusive_group()
    cls.add_argument("--classifier", dest="classifier", action="store_true", default=None,
                     help="report top-1 agreement for every 2-D output")
    cls.add_argument("--no-classifier", dest="classifier", action="store_false")
    p.add_argument("--json", help="write the report JSON here")
    add_runner_args(p)
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    """Limits and paths before anything runs (trt_edge.cli._validate / _paths)."""
    from . import _validate
    from ._runner_args import check_runner_paths

    _validate.at_least("--runs", args.runs, 1)
    _validate.finite_at_least("--rtol", args.rtol, 0.0)
    _validate.finite_at_least("--atol", args.atol, 0.0)
    torch_file = args.torch.rpartition(":")[0] if args.torch else ""
    check_runner_paths(args, [("model", a) for a in args.artifacts], {"--json": args.json},
                       [("--torch file", torch_file if torch_file.endswith(".py") else None)])


def run(args: argparse.Namespace) -> int:
    from ..bench.compare import CompareOptions, compare
    from ..errors import InvalidInputError
    from ..numerics import Tolerance
    from ._runner_args import input_options, ort_options

    _check(args)
    if args.torch:
        if len(args.artifacts) != 1:
            raise InvalidInputError("With --torch give exactly one MODEL (the candidate).")
        from ..runtime.torch_module import load_torch_factory
        reference = load_torch_factory(args.torch)
        candidate = args.artifacts[0]
    else:
        if len(args.artifacts) != 2:
            raise InvalidInputError("Give two models, REFERENCE CANDIDATE (or --torch MODULE:FACTORY CANDIDATE).")
        reference, candidate = args.artifacts
    tolerance = args.tolerance
    if args.rtol is not None or args.atol is not None:
        if args.rtol is None or args.atol is None or tolerance:
            raise InvalidInputError("Give both --rtol and --atol (and not --tolerance).")
        tolerance = Tolerance(rtol=args.rtol, atol=args.atol)
    opts = CompareOptions(inputs=input_options(args), runs=args.runs, tolerance=tolerance,
                          classifier=args.classifier)
    ort = ort_options(args)
    result = compare(reference, candidate, opts, backend_reference=args.backend,
                     backend_candidate=args.backend, ort_options=ort)
    print(result.table())
    if args.json:
        log.info("wrote %s", result.save_json(args.json))
    return 0 if result.passed else 1
