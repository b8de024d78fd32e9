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


def _check(args: argparse.Namespace) -> None:
    """Limits and paths before anything runs (trt_edge.cli._validate / _paths)."""
    from . import _validate
    from ._runner_args import check_runner_paths

    _validate.at_least("--batch-size", args.batch_size, 1)
    _validate.at_least("--top-k", args.top_k, 1)
    _validate.at_least("--limit", args.limit, 1)
    check_runner_paths(args, [("model", args.artifact)], {"--json": args.json}, [("--data", args.data)])
    _check_labels(args)


def _check_labels(args: argparse.Namespace) -> None:
    """Labels are integer class ids the model's output can score (checked before the run)."""
    import zipfile
    from pathlib import Path

    import numpy as np

    from ..errors import InvalidInputError

    p = Path(args.data)
    if not p.is_file():
        raise InvalidInputError(f"--data '{p}' does not exist or is not a file: give a .npz with 'x' and 'y'.")
    try:
        with np.load(p, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise InvalidInputError(f"--data '{p}' is a single array: save a .npz with np.savez(path, x=..., y=...).")
            if "y" not in data.files:
                raise InvalidInputError(f"--data '{p}' has no 'y' array (labels); it has {sorted(data.files)}.")
            y = np.asarray(data["y"])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidInputError(f"Cannot read --data '{p}' as .npz ({type(exc).__name__}: {exc}); save it with "
                                "np.savez(path, x=..., y=...).") from exc
    if y.size == 0:
        raise InvalidInputError(f"--data '{p}' has no labels ('y' is empty).")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y))):
            raise InvalidInputError(f"--data '{p}': labels 'y' must be integer class ids, got dtype {y.dtype}.")
    if y.min() < 0:
        raise InvalidInputError(f"--data '{p}': labels must be class ids >= 0, found {int(y.min())}.")
    classes = _output_classes(args)
    if classes is not None and int(y.max()) >= classes:
        raise InvalidInputError(f"--data '{p}': label {int(y.max())} is out of range: the model's output scores "
                                f"{classes} classes (ids 0..{classes - 1}). Check the labels or --output.")


def _output_classes(args: argparse.Namespace) -> int | None:
    """The fixed class count of the scored output of an .onnx model (None when unknown)."""
    if not str(args.artifact).lower().endswith(".onnx"):
        return None
    from ..artifacts import load_onnx
    from ..onnx_io import graph_outputs

    try:
        outs = graph_outputs(load_onnx(args.artifact, load_external_data=False))
    except Exception:  # noqa: BLE001 - a broken model is reported by the run itself
        return None
    spec = next((o for o in outs if o.name == args.output), None) if args.output else (outs[0] if outs else None)
    if spec is None or not spec.shape or len(spec.shape) != 2:
        return None
    c = spec.shape[1]
    return c if isinstance(c, int) and c > 1 else None


def run(args: argparse.Namespace) -> int:
    from ..bench.evaluate import EvalOptions, evaluate
    from ._runner_args import ort_options

    _check(args)
    opts = EvalOptions(batch_size=args.batch_size, output=args.output, top_k=args.top_k, limit=args.limit,
                       class_names=args.class_names.split(",") if args.class_names else None)
    result = evaluate(args.artifact, args.data, opts, backend=args.backend, ort_options=ort_options(args))
    print(result.table())
    if args.json:
        log.info("wrote %s", result.save_json(args.json))
    return 0
