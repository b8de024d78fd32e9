"""trt-edge compress: run a compression recipe on a built-in model, with a report per step."""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from ..errors import InvalidInputError

ORDER = 15
log = logging.getLogger("trt_edge")
MODELS = ("mnist_cnn", "mobilenet_v2")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress", help="prune / distill / factorise / share weights / QAT a built-in model, report each step",
        description="Run a compression recipe on a built-in model. After each step the model is exported "
                    "to ONNX (verified against torch in ONNX Runtime) and measured: parameters, MACs, "
                    "file size, task metric (MNIST: held-out accuracy; MobileNetV2: top-1 agreement with "
                    "the original on scikit-image photos) and ONNX Runtime latency. Steps: prune[:MACS "
                    "FRACTION], unstructured[:SPARSITY], sparse24[:EPOCHS], distill[:EPOCHS], "
                    "finetune[:EPOCHS], lowrank[:ENERGY], share[:BITS], qat[:EPOCHS] (last).")
    p.add_argument("model", help=f"built-in model: {', '.join(MODELS)}")
    p.add_argument("--recipe", required=True, help="comma-separated steps, e.g. 'prune:0.5,finetune:2,qat:1'")
    p.add_argument("-o", "--output-dir", required=True, help="folder for the ONNX file of every step")
    p.add_argument("--json", help="write the report as JSON here")
    p.add_argument("--train-samples", type=int, default=None,
                   help="MNIST digits to train on (default: all 4,000 of the training split); "
                        "MobileNetV2: training views (default 512)")
    p.add_argument("--base-epochs", type=int, default=3, help="MNIST: epochs to train the original model")
    p.add_argument("--lr", type=float, default=None, help="learning rate of the training steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latency-runs", type=int, default=50, help="ONNX Runtime timing runs per step (0: skip)")
    p.set_defaults(func=run)


def _validate(args: argparse.Namespace) -> None:
    from ._paths import check_writable
    if args.model not in MODELS:
        raise InvalidInputError(f"Unknown model '{args.model}': compress supports {', '.join(MODELS)}.")
    for opt, val, low in (("--train-samples", args.train_samples, 16), ("--base-epochs", args.base_epochs, 1),
                          ("--latency-runs", args.latency_runs, 0)):
        if val is not None and val < low:
            raise InvalidInputError(f"{opt} must be >= {low}, got {val}.")
    if args.lr is not None and not args.lr > 0:
        raise InvalidInputError(f"--lr must be > 0, got {args.lr}.")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"-o '{out}' is a file: give a folder.")
    check_writable(out / "original.onnx", "-o")
    if args.json:
        check_writable(args.json, "--json")


def run(args: argparse.Namespace) -> int:
    from ..compress.recipe import parse_recipe
    steps = parse_recipe(args.recipe)   # bad recipes fail before any training
    _validate(args)
    from ..compress.recipe import run_recipe
    from ..compress.report import format_reports
    if args.model == "mnist_cnn":
        from ..compress.tasks import mnist_task, train_mnist
        task, split = mnist_task(train_samples=args.train_samples, seed=args.seed, lr=args.lr or 1e-3)
        model = train_mnist(split, epochs=args.base_epochs, seed=args.seed)
    else:
        from ..compress.tasks import mobilenet_task
        from ..models.mobilenetv2 import mobilenet_v2_imagenet
        model = mobilenet_v2_imagenet()
        task = mobilenet_task(model, train_views=args.train_samples or 512, seed=args.seed, lr=args.lr or 1e-4)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    _, reports = run_recipe(model, steps, task, args.output_dir, latency_runs=args.latency_runs)
    print(format_reports(reports))
    if args.json:
        from ..artifacts import atomic_write_json
        atomic_write_json(args.json, {"model": args.model, "recipe": args.recipe,
                                      "steps": [dataclasses.asdict(r) for r in reports]})
    return 0
