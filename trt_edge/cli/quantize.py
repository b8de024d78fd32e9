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


def run(args: argparse.Namespace) -> int:
    from ..artifacts import load_onnx, save_onnx, write_sidecar
    from ..quant import CalibrationResult, Fp16Options, QuantizeOptions, convert_fp16, quantize_qdq

    model = load_onnx(args.model)
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
                           check_model_hash=not args.allow_stale_ranges)
    if args.keep_worst:
        if not args.data:
            raise InvalidInputError("--keep-worst needs --data X.npz (inputs to measure per-layer SQNR).")
        from ..quant.data import NumpyReader
        from ..quant.sensitivity import keep_worst_float, layer_sensitivity

        sens = layer_sensitivity(model, ranges, NumpyReader(args.data, batch_size=16, max_samples=64), opts)
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
    return 0
