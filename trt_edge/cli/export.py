"""trt-edge export: torch module -> verified ONNX."""
from __future__ import annotations

import argparse
import logging

import numpy as np

from ..errors import ExportError, InvalidInputError, TrtEdgeError

ORDER = 10
log = logging.getLogger("trt_edge")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a PyTorch module to ONNX and verify it against torch",
                       description="Export a torch module to ONNX (named I/O, dynamic axes) and verify "
                                   "the file in ONNX Runtime against torch at two batch sizes.")
    p.add_argument("module", help="built-in (mnist_cnn, mobilenet_v2, minilm), 'pkg.mod:factory', "
                                  "'file.py:factory' or a TorchScript .pt file")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    p.add_argument("--shapes", action="append", help="sample input shapes, e.g. input:1x3x224x224 "
                                                     "(random float data)")
    p.add_argument("--inputs", help=".npz with one sample array per input name")
    p.add_argument("--input-names", help="comma-separated input names")
    p.add_argument("--output-names", help="comma-separated output names")
    p.add_argument("--dynamic", action="append", default=[],
                   help="dynamic axis NAME:AXIS=DIM, e.g. input_ids:1=sequence (batch is dynamic by default)")
    p.add_argument("--static-batch", action="store_true", help="do not make axis 0 dynamic")
    p.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--external-data", action="store_true", help="write weights to OUTPUT.data")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs torch check")
    p.set_defaults(func=run)


def _dynamic_axes(items: list[str], names: list[str], outputs: list[str], static_batch: bool
                  ) -> dict[str, dict[int, str]] | None:
    if not items:
        return None
    axes: dict[str, dict[int, str]] = {} if static_batch else {n: {0: "batch"} for n in names + outputs}
    for item in items:
        try:
            name, rest = item.rsplit(":", 1)
            axis, dim = rest.split("=", 1)
            axes.setdefault(name, {})[int(axis)] = dim
        except ValueError as exc:
            raise InvalidInputError(f"Bad --dynamic '{item}': write NAME:AXIS=DIM, e.g. input_ids:1=sequence."
                                    ) from exc
    return axes


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


def _module_file(spec: str) -> str | None:
    """The file a module spec reads ('file.py:factory' or a TorchScript .pt), if any."""
    target, sep, _ = spec.rpartition(":")
    if sep and target.endswith(".py"):
        return target
    if not sep and spec.endswith((".pt", ".ts", ".pth")):
        return spec
    return None


def _check(args: argparse.Namespace) -> None:
    """Paths and sample shapes, before torch is imported or the module is built."""
    from ..onnx_io import parse_shapes
    from ._paths import Output, check_paths

    if args.inputs and args.shapes:
        raise InvalidInputError("--inputs and --shapes cannot be used together: --inputs already gives the "
                                "sample arrays (and their shapes).")
    for name, dims in parse_shapes(args.shapes).items():
        if any(d < 1 for d in dims):
            raise InvalidInputError(f"--shapes {name}:{'x'.join(map(str, dims))}: every dimension of a sample "
                                    "input must be >= 1.")
    if not 7 <= args.opset <= 30:
        raise InvalidInputError(f"--opset {args.opset} is not an ONNX opset this exporter writes (try 17-21).")
    check_paths([("module file", _module_file(args.module)), ("--inputs", args.inputs)],
                {"-o": Output(args.output, sidecar=True, companions=(".data",))})


def run(args: argparse.Namespace) -> int:
    _check(args)
    import torch

    from ..export import ExportOptions, export_onnx
    from ..export.module_spec import resolve_module
    from ..onnx_io import load_feeds, parse_shapes

    try:
        resolved = resolve_module(args.module)
    except TrtEdgeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's own code raised while building the module
        raise InvalidInputError(f"Building the module '{args.module}' failed in your code: "
                                f"{type(exc).__name__}: {_first_line(exc)}. Fix the factory (or its file) "
                                "and run again.") from exc
    input_names = args.input_names.split(",") if args.input_names else resolved.input_names
    output_names = args.output_names.split(",") if args.output_names else resolved.output_names
    sample = resolved.sample
    if args.inputs:
        sample = load_feeds(args.inputs)
    elif args.shapes:
        rng = np.random.default_rng(0)
        sample = {k: rng.standard_normal(v).astype(np.float32) for k, v in parse_shapes(args.shapes).items()}
    if sample is None:
        raise InvalidInputError("Give sample inputs: --shapes input:1x3x224x224 or --inputs sample.npz.")
    if input_names is None:
        input_names = [k for k in sample if k] or None
    ordered = [sample[n] for n in input_names] if input_names and all(n in sample for n in input_names) \
        else list(sample.values())
    axes = _dynamic_axes(args.dynamic, list(input_names or []), list(output_names or []), args.static_batch) \
        or resolved.dynamic_axes
    opts = ExportOptions(input_names=input_names, output_names=output_names, dynamic_axes=axes,
                         dynamic_batch=not args.static_batch, opset=args.opset, exporter=args.exporter,
                         external_data=args.external_data, verify=not args.no_verify)
    try:
        res = export_onnx(resolved.module, tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in ordered),
                          args.output, opts)
    except TrtEdgeError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:  # torch, running the user's module
        shapes = {k: tuple(v.shape) for k, v in sample.items()}
        raise ExportError(f"Running '{args.module}' on the sample inputs {shapes} failed: "
                          f"{type(exc).__name__}: {_first_line(exc)}. Check --shapes/--inputs against what "
                          "the module's forward() expects.") from exc
    print(f"exported {args.module} -> {res.path} ({res.exporter} exporter, opset {res.opset}, "
          f"{res.seconds:.1f}s)")
    for shapes, report in res.verification:
        print(f"verified vs torch at {shapes}:")
        print(report.table())
    return 0
