"""trt-edge quantize: FP32 ONNX + ranges -> explicit Q/DQ INT8 ONNX (or a mixed FP16 ONNX)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import InvalidInputError

ORDER = 31
log = logging.getLogger("trt_edge")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize", help="insert explicit INT8 Q/DQ from a ranges file, or convert to mixed FP16",
        description="INT8: QuantizeLinear/DequantizeLinear by TensorRT's explicit-quantization rules from "
                    "`trt-edge calibrate` ranges (refused if made for another model). FP16: a mixed-"
                    "precision graph for strongly typed TensorRT (sensitive ops stay FP32).")
    p.add_argument("model", type=Path, help="FP32 ONNX model")
    p.add_argument("-o", "--output", type=Path, required=True, help="output ONNX, e.g. MODEL.int8.onnx")
    p.add_argument("--precision", choices=("int8", "fp16"), default="int8")
    p.add_argument("--ranges", type=Path, help="ranges file from `trt-edge calibrate` (int8)")
    p.add_argument("--target", choices=("tensorrt", "onnxruntime"), default="tensorrt",
                   help="Q/DQ placement: TensorRT's rules, or also op outputs + int32 bias for ORT int8 kernels")
    p.add_argument("--exclude-nodes", default="", help="comma-separated node names to keep float")
    p.add_argument("--exclude-ops", default="", help="comma-separated op types to keep float")
    p.add_argument("--ort-scheme", choices=("auto", "u8s8", "u8u8"), default="auto",
                   help="--target onnxruntime: int8 weights (u8s8) or the same grid as uint8 (u8u8); auto "
                        "picks u8u8 on x86 CPUs without VNNI, where ONNX Runtime's u8s8 kernels saturate")
    p.add_argument("--per-tensor-weights", action="store_true", help="one scale per weight tensor")
    p.add_argument("--no-residual-add", action="store_true", help="do not quantize residual Add inputs")
    p.add_argument("--no-activation-matmul", action="store_true",
                   help="keep MatMuls between two activations (attention) in float")
    p.add_argument("--keep-worst", type=int, default=0, metavar="N",
                   help="int8: keep the N layers with the lowest SQNR in float (needs --data)")
    p.add_argument("--data", type=Path, help=".npz of inputs for --keep-worst's sensitivity analysis")
    p.add_argument("--sensitivity-plot", type=Path, help="write the per-layer SQNR plot here (png)")
    p.add_argument("--no-keep-io-types", action="store_true", help="fp16: make graph inputs/outputs float16")
    p.add_argument("--allow-stale-ranges", action="store_true",
                   help="use ranges calibrated on another model (unsafe: names may not match)")
    p.set_defaults(func=run)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def check_options(args: argparse.Namespace) -> None:
    """Option conflicts, limits and paths, before any file is read."""
    from . import _validate
    from ._paths import Output, check_paths

    _validate.at_least("--keep-worst", args.keep_worst, 0)
    if args.precision == "fp16":
        if args.ranges:
            raise _validate.conflict("--precision fp16 and --ranges", "ranges are for INT8; drop --ranges "
                                     "or use --precision int8")
        if args.keep_worst:
            raise _validate.conflict("--precision fp16 and --keep-worst", "--keep-worst keeps INT8 layers "
                                     "in float")
    elif args.no_keep_io_types:
        log.warning("--no-keep-io-types only applies to --precision fp16; ignored.")
    if args.data and not args.keep_worst:
        log.warning("--data is only used by --keep-worst; ignored.")
    if args.sensitivity_plot and not args.keep_worst:
        log.warning("--sensitivity-plot is only written with --keep-worst; ignored.")
    check_paths({"model": args.model, "--ranges": args.ranges, "--data": args.data},
                {"-o": Output(args.output, sidecar=True), "--sensitivity-plot": args.sensitivity_plot})


def _check_model(model, args: argparse.Namespace) -> None:  # noqa: ANN001 - onnx.ModelProto
    """A model with something to convert; warn about --exclude-* names that match nothing."""
    from ..onnx_io import graph_inputs, iter_nodes
    from . import _validate

    nodes = list(iter_nodes(model.graph))
    if not nodes or not graph_inputs(model):
        raise InvalidInputError(f"'{args.model}' has no {'nodes' if not nodes else 'inputs'}: there is nothing "
                                "to quantize. Give the model you calibrated.")
    if args.precision == "fp16" and any(n.op_type == "QuantizeLinear" for n in nodes):
        raise InvalidInputError(f"'{args.model}' is already INT8-quantized (it has QuantizeLinear nodes): convert "
                                "the FP32 model it was made from to FP16 instead.")
    _validate.warn_unknown("--exclude-nodes", _csv(args.exclude_nodes), {n.name for n in nodes}, "node")
    _validate.warn_unknown("--exclude-ops", _csv(args.exclude_ops), {n.op_type for n in nodes}, "op type")


def _sensitivity_reader(model, args: argparse.Namespace):  # noqa: ANN001, ANN202
    """--keep-worst's data, checked against the model like calibrate's (float64 is cast)."""
    from ..onnx_io import graph_inputs
    from ..quant.data import NumpyReader
    from . import _validate

    specs = graph_inputs(model)
    names = [s.name for s in specs]
    arrays = _validate.load_arrays(args.data, "--data")
    if len(names) == 1 and len(arrays) == 1 and names[0] not in arrays:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = sorted(set(names) - set(arrays))
    if missing:
        raise InvalidInputError(f"--data '{args.data}' has arrays {sorted(arrays)} but the model's inputs are "
                                f"{names} (missing {missing}): save one array per input name.")
    arrays = _validate.check_arrays({n: arrays[n] for n in names}, specs, f"--data '{args.data}'")
    return NumpyReader(arrays, batch_size=16, max_samples=64)


def run(args: argparse.Namespace) -> int:
    from ..artifacts import load_onnx, save_onnx, write_sidecar
    from ..quant import CalibrationResult, Fp16Options, QuantizeOptions, convert_fp16, quantize_qdq

    check_options(args)
    model = load_onnx(args.model)
    _check_model(model, args)
    if args.precision == "fp16":
        fp16, report = convert_fp16(model, Fp16Options(keep_io_types=not args.no_keep_io_types,
                                                       exclude_nodes=_csv(args.exclude_nodes),
                                                       exclude_op_types=_csv(args.exclude_ops)))
        save_onnx(fp16, args.output)
        write_sidecar(args.output, "onnx-fp16", sources={"onnx": args.model},
                      extra={"fp32_nodes": report.fp32_nodes})
        print(report.table())
        print(f"-> {args.output}")
        return 0
    if not args.ranges:
        raise InvalidInputError("INT8 needs --ranges FILE (run `trt-edge calibrate` first).")
    ranges = CalibrationResult.load(args.ranges)
    opts = QuantizeOptions(exclude_nodes=_csv(args.exclude_nodes), exclude_op_types=_csv(args.exclude_ops),
                           per_channel=not args.per_tensor_weights, residual_add=not args.no_residual_add,
                           activation_matmul=not args.no_activation_matmul, target=args.target,
                           check_model_hash=not args.allow_stale_ranges, ort_scheme=args.ort_scheme)
    from ..quant.qdq import find_existing_quantization, model_opset, refuse_activation_qdq
    existing = find_existing_quantization(model)
    refuse_activation_qdq(existing)  # before any long work
    if existing:
        print(f"note: the model is already weight-quantized ({existing.describe()}): its weight quantization "
              "is kept and only its activations are quantized")
    if model_opset(model) < 13:
        print(f"note: the model is opset {model_opset(model)}; it is converted to opset 13 with "
              "onnx.version_converter (per-channel Q/DQ needs it); the output is opset 13")
    if args.keep_worst:
        if not args.data:
            raise InvalidInputError("--keep-worst needs --data X.npz (inputs to measure per-layer SQNR).")
        from ..quant.sensitivity import keep_worst_float, layer_sensitivity

        sens = layer_sensitivity(model, ranges, _sensitivity_reader(model, args), opts)
        print(sens.table())
        if args.sensitivity_plot:
            from ..quant.plots import plot_sensitivity
            plot_sensitivity(sens, args.sensitivity_plot)
        opts = keep_worst_float(opts, sens, args.keep_worst)
        print(f"keeping in float: {', '.join(opts.exclude_nodes)}")
    qmodel = quantize_qdq(model, ranges, opts)
    save_onnx(qmodel, args.output)
    write_sidecar(args.output, "onnx-int8-qdq", sources={"onnx": args.model, "ranges": args.ranges},
                  options=opts)
    q = sum(n.op_type == "QuantizeLinear" for n in qmodel.graph.node)
    dq = sum(n.op_type == "DequantizeLinear" for n in qmodel.graph.node)
    print(f"inserted {q} QuantizeLinear / {dq} DequantizeLinear ({opts.target}) -> {args.output}")
    if opts.target == "onnxruntime":
        from ..quant.cpu import ort_int8_scheme
        scheme, why = ort_int8_scheme(opts.ort_scheme)
        print(f"ONNX Runtime int8 scheme: {scheme} ({why})")
    return 0
