"""trt-edge export-triton: write a Triton-layout repository entry (config.pbtxt + VERSION/model.*)."""
from __future__ import annotations

import argparse
import logging

ORDER = 79
log = logging.getLogger("trt_edge")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-triton", help="write MODEL into a Triton-layout repository (config.pbtxt + VERSION/model.*)",
        description="Copy an .onnx model or TensorRT .plan into REPO/NAME/VERSION/ and write REPO/NAME/config.pbtxt "
                    "completed from the model's signature. The folder loads in `trt-edge serve` and in NVIDIA "
                    "Triton unchanged.")
    p.add_argument("model", help="model.onnx or engine.plan")
    p.add_argument("-o", "--model-repository", required=True, help="repository folder (created if missing)")
    p.add_argument("--name", help="model name (default: the file name without suffix)")
    p.add_argument("--version", type=int, default=1, help="version folder (default 1)")
    p.add_argument("--max-batch-size", type=int, default=None,
                   help="max_batch_size (default: 4 for a model with a dynamic batch axis, else 0)")
    p.add_argument("--no-dynamic-batching", action="store_true", help="leave dynamic_batching out")
    p.add_argument("--preferred-batch-size", type=int, nargs="*", default=[], help="dynamic_batching sizes")
    p.add_argument("--max-queue-delay-us", type=int, default=0, help="max_queue_delay_microseconds")
    p.add_argument("--max-queue-size", type=int, default=0, help="default_queue_policy max_queue_size (0: unbounded)")
    p.add_argument("--queue-timeout-us", type=int, default=0, help="default_queue_policy default_timeout_microseconds")
    p.add_argument("--instances", type=int, default=1, help="instance_group count (default 1)")
    p.add_argument("--kind", choices=["KIND_CPU", "KIND_GPU", "KIND_AUTO"], default=None,
                   help="instance_group kind (default: KIND_GPU for engines, KIND_CPU for ONNX)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..serve.export import ExportTritonOptions, export_triton

    name = args.name or Path(args.model).stem.split(".")[0]
    folder = export_triton(args.model, args.model_repository, ExportTritonOptions(
        name=name, version=args.version, max_batch_size=args.max_batch_size,
        dynamic_batching=not args.no_dynamic_batching, preferred_batch_size=tuple(args.preferred_batch_size),
        max_queue_delay_microseconds=args.max_queue_delay_us, max_queue_size=args.max_queue_size,
        default_timeout_microseconds=args.queue_timeout_us, instances=args.instances, instance_kind=args.kind,
        overwrite=args.overwrite))
    print(f"wrote {folder / 'config.pbtxt'} and {folder / str(args.version)}/")
    return 0
