"""trt-edge calibrate: FP32 ONNX + calibration data -> ranges file (+ TensorRT cache)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import InvalidInputError

ORDER = 30
log = logging.getLogger("trt_edge")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate", help="compute INT8 ranges (our entropy calibrator) and optionally a TensorRT cache",
        description="Run the FP32 model in ONNX Runtime on calibration data, stream activations into "
                    "histograms and pick per-tensor ranges. The ranges file feeds `trt-edge quantize` "
                    "(explicit Q/DQ); --trt-cache also writes a TensorRT 10 EntropyCalibration2 cache.")
    p.add_argument("model", type=Path, help="FP32 ONNX model")
    p.add_argument("--data", type=Path, required=True,
                   help=".npz (one array per input name), .npy (with --input-name), a folder of images, "
                        "or a .txt file of sentences (one per line, with --tokenizer)")
    p.add_argument("-o", "--output", type=Path, required=True, help="ranges file, e.g. calibration/NAME.ranges.json")
    p.add_argument("--method", choices=("auto", "entropy", "percentile", "max", "mse"), default="auto",
                   help="auto (default): per op-type group, whichever method gives the best output SQNR "
                        "on the first --select-samples samples; entropy: TensorRT's EntropyCalibration2")
    p.add_argument("--select-samples", type=int, default=8, help="--method auto scores on the first batches until this many samples")
    p.add_argument("--percentile", type=float, default=99.99)
    p.add_argument("--num-bins", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shuffle", action="store_true", help="shuffle samples (with --seed) before the limit")
    p.add_argument("--input-name", help="model input fed by a single array or by images (default: the first input)")
    p.add_argument("--image-size", default="224x224", help="HxW crop for image folders")
    p.add_argument("--image-resize", type=int, default=256, help="shorter side before the crop (0: none)")
    p.add_argument("--image-mean", default="0.485,0.456,0.406")
    p.add_argument("--image-std", default="0.229,0.224,0.225")
    p.add_argument("--grayscale", action="store_true")
    p.add_argument("--tokenizer", help="Hugging Face tokenizer folder for text data")
    p.add_argument("--max-length", type=int, default=128, help="token limit for text data")
    p.add_argument("--scope", choices=("qdq", "all"), default=None,
                   help="tensors to calibrate: those Q/DQ needs, or every float activation "
                        "(default: all when --trt-cache is given)")
    p.add_argument("--target", choices=("tensorrt", "onnxruntime"), default="tensorrt",
                   help="Q/DQ placement the ranges are for")
    p.add_argument("--exclude-nodes", default="", help="comma-separated node names to keep float")
    p.add_argument("--exclude-ops", default="", help="comma-separated op types to keep float")
    p.add_argument("--trt-cache", type=Path, help="also write a TensorRT calibration cache here")
    p.add_argument("--trt-version", default="10.3.0", help="TensorRT version the cache is for")
    p.set_defaults(func=run)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def make_reader(args: argparse.Namespace, input_names: list[str]):
    """Pick the reader from the --data path."""
    from ..quant.data import ImageFolderReader, ImagePreprocess, NumpyReader, TextReader

    data: Path = args.data
    first = args.input_name or input_names[0]
    common = dict(batch_size=args.batch_size, max_samples=args.max_samples, seed=args.seed,
                  shuffle=args.shuffle)
    if data.is_dir():
        try:
            h, w = (int(v) for v in args.image_size.lower().split("x"))
        except ValueError as exc:
            raise InvalidInputError(f"--image-size must be HxW, got {args.image_size!r}.") from exc
        pre = ImagePreprocess(size=(h, w), resize=args.image_resize or None,
                              mean=tuple(float(v) for v in _csv(args.image_mean)),
                              std=tuple(float(v) for v in _csv(args.image_std)), grayscale=args.grayscale)
        return ImageFolderReader(data, first, pre, **common)
    if data.suffix in (".npz", ".npy"):
        return NumpyReader(data, input_name=first, **common)
    if data.suffix == ".txt":
        if not args.tokenizer:
            raise InvalidInputError("Text calibration data needs --tokenizer DIR (a Hugging Face tokenizer).")
        from .._lazy import require
        transformers = require("transformers", "tokenizing calibration text")
        tok = transformers.AutoTokenizer.from_pretrained(args.tokenizer)
        sentences = [ln.strip() for ln in data.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return TextReader(sentences, tok, input_names=input_names, max_length=args.max_length, **common)
    raise InvalidInputError(f"Cannot tell what '{data}' holds: give a .npz/.npy, a folder of images or a "
                            ".txt of sentences.")


def run(args: argparse.Namespace) -> int:
    from ..artifacts import load_onnx
    from ..onnx_io import graph_inputs
    from ..quant import CalibrationOptions, calibrate, write_trt_cache

    model = load_onnx(args.model)
    reader = make_reader(args, [s.name for s in graph_inputs(model)])
    scope = args.scope or ("all" if args.trt_cache else "qdq")
    opts = CalibrationOptions(method=args.method, num_bins=args.num_bins, percentile=args.percentile,
                              max_samples=args.max_samples, batch_size=args.batch_size, seed=args.seed,
                              scope=scope, exclude_nodes=_csv(args.exclude_nodes),
                              exclude_op_types=_csv(args.exclude_ops), target=args.target,
                              select_samples=args.select_samples)
    result = calibrate(model, reader, opts)
    result.save(args.output)
    print(f"calibrated {len(result)} tensors on {result.num_samples} samples ({args.method}) -> {args.output}")
    if "auto_selection" in result.settings:
        from ..quant.select import SelectionReport
        print(SelectionReport(**result.settings["auto_selection"]).summary())
    if args.trt_cache:
        write_trt_cache(result, args.trt_cache, trt_version=args.trt_version)
        print(f"TensorRT {args.trt_version} EntropyCalibration2 cache -> {args.trt_cache}")
    return 0
