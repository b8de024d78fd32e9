"""``trt-edge build MODEL.onnx -o engines/NAME.plan``: TensorRT engine (or ORT artifact without TensorRT)."""
from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 38


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "build", help="build a TensorRT engine (.plan) from ONNX, with metadata sidecar",
        description="Build a TensorRT engine from an ONNX model (TensorRT 10 and 11). Without "
                    "TensorRT installed, writes a deployable ONNX artifact for the ONNX Runtime "
                    "backend at the requested precision instead, and says so.")
    p.add_argument("model", type=Path, help="ONNX model")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="engine path (default engines/<model>.<precision>.plan); a .onnx path asks "
                        "for the ONNX Runtime artifact")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    p.add_argument("--shapes", action="append", default=[], metavar="NAME:MIN/OPT/MAX[,...]",
                   help="one optimization profile (repeat for several), e.g. "
                        "input:1x3x224x224/8x3x224x224/32x3x224x224")
    p.add_argument("--default-batch", default="1/8/128", metavar="MIN/OPT/MAX",
                   help="without --shapes: range of dynamic batch axes (other dynamic axes need --shapes); "
                        "'none' to require --shapes")
    p.add_argument("--workspace", default=None, metavar="SIZE",
                   help="workspace memory-pool limit, e.g. 1G (set it on Jetson: memory is shared)")
    p.add_argument("--optimization-level", type=int, default=None, choices=range(6), metavar="0-5",
                   help="builder optimization level (TensorRT default 3)")
    p.add_argument("--timing-cache", type=Path, default=None,
                   help="persistent timing cache (default: <output dir>/timing.cache)")
    p.add_argument("--no-timing-cache", action="store_true", help="build without a timing cache")
    st = p.add_mutually_exclusive_group()
    st.add_argument("--strongly-typed", dest="strongly_typed", action="store_true", default=None,
                    help="strongly typed network on TensorRT 10 (always on in 11)")
    st.add_argument("--no-strongly-typed", dest="strongly_typed", action="store_false",
                    help="weakly typed network (TensorRT 10 only)")
    p.add_argument("--sparse", action="store_true", help="allow 2:4 sparse-weight kernels (SPARSE_WEIGHTS)")
    p.add_argument("--dla-core", type=int, default=None, help="run on this DLA core (Jetson Orin, TensorRT 10)")
    p.add_argument("--no-gpu-fallback", action="store_true", help="with --dla-core: fail instead of "
                   "falling back to the GPU for layers DLA cannot run")
    p.add_argument("--plugins", action="append", type=Path, default=[], metavar="LIB.so",
                   help="plugin library to load (repeatable), e.g. ours from csrc/")
    p.add_argument("--serialize-plugins", action="store_true",
                   help="ship the plugin libraries inside the engine (needs --version-compatible)")
    p.add_argument("--version-compatible", action="store_true",
                   help="engine later TensorRT versions and the lean runtime can run")
    p.add_argument("--exclude-lean-runtime", action="store_true",
                   help="with --version-compatible: leave the lean runtime out of the plan")
    p.add_argument("--hardware-compatibility", choices=("ampere_plus",), default=None,
                   help="engine that runs on any Ampere or newer GPU")
    p.add_argument("--require-signed", action="store_true",
                   help="build only from a model directory (and plugin directories) whose OpenSSF model "
                        "signature verifies with a --trusted-key / --trusted-ca (e.g. a registry version)")
    p.add_argument("--trusted-key", action="append", default=[], metavar="PUB",
                   help="trusted EC public key for model signatures (repeatable); a signed directory is "
                        "then always verified")
    p.add_argument("--trusted-ca", action="append", default=[], metavar="CA",
                   help="trusted CA certificate(s) for certificate model signatures (repeatable)")
    p.add_argument("--ranges", type=Path, default=None, help="INT8 ranges from `trt-edge calibrate`")
    p.add_argument("--calib-data", type=Path, default=None,
                   help="INT8 calibration data .npz (one array per input, samples on axis 0)")
    p.add_argument("--calib-cache", type=Path, default=None,
                   help="TensorRT calibration cache (TensorRT 10 implicit INT8)")
    p.add_argument("--calib-batch-size", type=int, default=8)
    p.add_argument("--calib-method", choices=("auto", "entropy", "percentile", "max", "mse"), default="auto",
                   help="our calibrator's range method for --calib-data (default auto; entropy = TensorRT's)")
    p.add_argument("--legacy-calibrator", action="store_true",
                   help="TensorRT 10: calibrate with IInt8EntropyCalibrator2 instead of inserting Q/DQ")
    p.add_argument("--mixed-fp16", action="store_true",
                   help="INT8 on TensorRT 10: allow FP16 for layers left in float")
    p.add_argument("--no-tf32", action="store_true",
                   help="keep FP32 layers out of TF32 tensor cores (closer to ONNX Runtime's FP32)")
    p.add_argument("--no-optimize", action="store_true", help="skip the graph optimization passes")
    p.add_argument("--require-tensorrt", action="store_true",
                   help="fail instead of writing an ONNX Runtime artifact when TensorRT is missing")
    p.add_argument("--trt-log", choices=("error", "warning", "info", "verbose"), default="warning",
                   help="TensorRT messages shown (all are kept in NAME.plan.log)")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace, output: Path, timing_cache: Path | None) -> None:
    """Conflicting flags, limits and every output path against every input, before building."""
    from ..build.fallback import fallback_output_path
    from ..build.versions import tensorrt_available
    from . import _validate
    from ._paths import Output, check_paths

    _validate.at_least("--calib-batch-size", args.calib_batch_size, 1)
    _validate.at_least("--dla-core", args.dla_core, 0)
    int8_inputs = [f for f, v in (("--ranges", args.ranges), ("--calib-data", args.calib_data),
                                  ("--calib-cache", args.calib_cache)) if v is not None]
    if int8_inputs and args.precision != "int8":
        raise _validate.conflict(f"--precision {args.precision} and {int8_inputs[0]}",
                                 f"{int8_inputs[0]} is for INT8; drop it or use --precision int8")
    if args.ranges is not None and args.calib_cache is not None:
        raise _validate.conflict("--ranges and --calib-cache", "give one source of INT8 scales")
    if args.ranges is not None and args.calib_data is not None:
        raise _validate.conflict("--ranges and --calib-data", "the ranges are already calibrated; drop "
                                 "--calib-data (or drop --ranges to calibrate here)")
    if args.legacy_calibrator and args.strongly_typed:
        raise _validate.conflict("--legacy-calibrator and --strongly-typed", "TensorRT's legacy "
                                 "calibrator needs a weakly typed network")
    if args.no_timing_cache and args.timing_cache is not None:
        raise _validate.conflict("--timing-cache and --no-timing-cache", "choose one")
    outputs: dict[str, Output | Path | None] = {"-o": Output(output, sidecar=True, companions=(".log",))}
    fallback = fallback_output_path(output)
    if fallback != output and not args.require_tensorrt and not tensorrt_available():
        # where the ONNX Runtime artifact goes: never over a file trt-edge did not write
        outputs["-o (ONNX Runtime fallback)"] = Output(fallback, sidecar=True, derived=True)
    outputs["--timing-cache"] = Output(timing_cache, companions=(".key.json",)) if timing_cache else None
    inputs = [("model", args.model), ("--ranges", args.ranges), ("--calib-data", args.calib_data)]
    if args.calib_data is not None:  # TensorRT's calibrator writes the cache
        outputs["--calib-cache"] = args.calib_cache
    else:
        inputs.append(("--calib-cache", args.calib_cache))
    check_paths(inputs + [("--plugins", p) for p in args.plugins], outputs)


def run(args: argparse.Namespace) -> int:
    from ..build import BuildOptions, build, parse_profiles, parse_size
    from ..build.builder import BuildResult
    from ..build.fallback import FallbackResult

    default_batch = None
    if args.default_batch.lower() != "none":
        from ..errors import InvalidInputError

        try:
            lo, opt, hi = (int(v) for v in args.default_batch.split("/"))
        except ValueError as exc:
            raise InvalidInputError(f"--default-batch '{args.default_batch}': write MIN/OPT/MAX, e.g. 1/8/128.") from exc
        default_batch = (lo, opt, hi)
    output = args.output or Path("engines") / f"{args.model.stem}.{args.precision}.plan"
    timing_cache = None if args.no_timing_cache else (args.timing_cache or output.parent / "timing.cache")
    _check(args, output, timing_cache)
    _verify_sources(args)
    options = BuildOptions(
        precision=args.precision, strongly_typed=args.strongly_typed,
        profiles=parse_profiles(args.shapes), default_batch=default_batch,
        workspace=parse_size(args.workspace) if args.workspace else None,
        optimization_level=args.optimization_level, timing_cache=timing_cache,
        sparse_weights=args.sparse, dla_core=args.dla_core, gpu_fallback=not args.no_gpu_fallback,
        plugins=args.plugins, serialize_plugins=args.serialize_plugins,
        version_compatible=args.version_compatible, exclude_lean_runtime=args.exclude_lean_runtime,
        hardware_compatibility=args.hardware_compatibility, ranges=args.ranges,
        calib_data=args.calib_data, calib_cache=args.calib_cache, calib_batch_size=args.calib_batch_size,
        calib_method=args.calib_method,
        legacy_calibrator=args.legacy_calibrator, mixed_fp16=args.mixed_fp16,
        allow_tf32=not args.no_tf32, optimize_graph=not args.no_optimize, log_level=args.trt_log)
    result: BuildResult | FallbackResult
    if output.suffix.lower() == ".onnx":
        from ..build.fallback import build_onnx_artifact

        result = build_onnx_artifact(args.model, output, options, reason="an .onnx output was requested")
    else:
        result = build(args.model, output, options, allow_fallback=not args.require_tensorrt)
    if isinstance(result, FallbackResult):
        if result.requested_path != result.artifact_path:
            print(f"TensorRT is not installed, so no engine was built at {result.requested_path}; "
                  f"wrote {result.artifact_path} instead for the ONNX Runtime backend "
                  f"({result.precision}).")
        else:
            print(f"Wrote {result.artifact_path} ({result.precision}) for the ONNX Runtime backend "
                  f"({result.reason}).")
        print(f"Metadata: {result.metadata_path}")
        print(f"Run it:   trt-edge bench {result.artifact_path}")
        return 0
    print(f"Built {result.engine_path} ({result.metadata.precision}, TensorRT "
          f"{result.metadata.tensorrt_version}, {result.build_time_s:.1f}s)")
    for note in result.plan.notes:
        print(f"  {note}")
    print(f"Metadata: {result.metadata_path}")
    print(f"Build log: {result.log_path} ({len(result.warnings)} warning(s))")
    return 0


def _verify_sources(args: argparse.Namespace) -> None:
    """Verify the signed directories the build reads (model, plugins) before parsing anything."""
    if not (args.require_signed or args.trusted_key or args.trusted_ca):
        return
    from ..registry.policy import TrustPolicy, check_before_load

    policy = TrustPolicy.from_args(args.require_signed, args.trusted_key, args.trusted_ca)
    folders = {Path(args.model).resolve().parent}
    folders |= {Path(lib).resolve().parent for lib in args.plugins}
    for folder in sorted(folders):
        check_before_load(folder, policy)
