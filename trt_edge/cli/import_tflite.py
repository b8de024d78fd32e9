"""trt-edge import: a TFLite / LiteRT model -> verified ONNX."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

ORDER = 11
log = logging.getLogger("trt_edge")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="convert a .tflite model to ONNX and verify it against LiteRT",
                       description="Convert a TensorFlow Lite / LiteRT flatbuffer to ONNX (float models, and "
                                   "quantized models as explicit Q/DQ with the model's own scales), then run "
                                   "both on the same inputs (LiteRT's interpreter vs ONNX Runtime) and print "
                                   "the comparison. Nothing is written if they disagree. Needs "
                                   "pip install 'trt-edge[tflite]'.")
    p.add_argument("model", help="the .tflite file")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write (a sidecar .json goes beside it)")
    p.add_argument("--nchw", action="store_true",
                   help="declare 4-D inputs/outputs NCHW (default: keep TFLite's NHWC interface, so the same "
                        "arrays feed both files; the graph is NCHW inside either way)")
    p.add_argument("--symmetric-activations", action="store_true",
                   help="quantized models: make asymmetric int8/uint8 activations symmetric int8 (same range, "
                        "coarser step), which TensorRT's Q/DQ needs")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--inputs", help=".npz with one array per input name to verify on (default: two random "
                                    "feeds, uniform [0, 1) for float inputs)")
    p.add_argument("--no-verify", action="store_true", help="skip the check against LiteRT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import InvalidInputError
    from ..onnx_io import load_feeds
    from ..tflite import ImportOptions, import_tflite
    from ._paths import Output, check_paths

    model = Path(args.model)
    if not model.is_file():
        raise InvalidInputError(f"TFLite model '{model}' does not exist or is not a file.")
    if Path(args.output).suffix.lower() != ".onnx":
        raise InvalidInputError(f"-o '{args.output}' should name an .onnx file (e.g. -o {model.stem}.onnx).")
    check_paths({"the model": args.model, **({"--inputs": args.inputs} if args.inputs else {})},
                {"-o": Output(args.output, sidecar=True)})
    feeds = None
    if args.inputs:
        feeds = [load_feeds(args.inputs)]
    opts = ImportOptions(nchw=args.nchw, symmetric_activations=args.symmetric_activations, opset=args.opset,
                         verify=not args.no_verify)
    res = import_tflite(model, args.output, opts, feeds=feeds)
    n_ops = sum(res.tflite_ops.values())
    print(f"imported {model.name} -> {res.path} ({n_ops} TFLite ops -> {sum(res.onnx_ops.values())} ONNX nodes, "
          f"{res.layout.upper()} interface, {res.onnx_ops.get('Transpose', 0)} transposes, {res.seconds:.1f}s)")
    if res.quantized_tensors:
        print(f"quantized: {res.quantized_tensors} activations as Q/DQ with the model's scales"
              + (f"; {len(res.asymmetric_tensors)} asymmetric (use --symmetric-activations for TensorRT)"
                 if res.asymmetric_tensors else ""))
    for v in res.verification:
        print(f"verified vs LiteRT at {v.shapes}:")
        print(v.report.table())
    if res.operator_checks:
        worst = max((c.steps for c in res.operator_checks if c.step), default=0.0)
        print(f"each of {len(res.operator_checks)} quantized operators, run alone on LiteRT's own inputs, agrees "
              f"with LiteRT's integer kernels within one quantization step (worst {worst:.2f} steps)")
    if not res.verification:
        print("not verified (--no-verify)")
    return 0
