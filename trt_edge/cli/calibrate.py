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
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples per calibration run (default 32); a model with a fixed batch always runs "
                        "with its own (the data is regrouped)")
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


# Files one of which every saved Hugging Face tokenizer has (checked before importing transformers).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                    "sentencepiece.bpe.model", "tokenizer.model")


def _tokenizer(folder: str):  # noqa: ANN202 - a transformers tokenizer
    p = Path(folder)
    if not p.is_dir():
        raise InvalidInputError(f"--tokenizer '{folder}' is not a folder: give a Hugging Face tokenizer "
                                "folder (tokenizer.save_pretrained(DIR)).")
    if not any((p / name).is_file() for name in _TOKENIZER_FILES):
        raise InvalidInputError(f"--tokenizer '{folder}' is not a usable Hugging Face tokenizer folder: it has "
                                f"none of {', '.join(_TOKENIZER_FILES)}. Save one with tokenizer.save_pretrained(DIR).")
    from .._lazy import require
    transformers = require("transformers", "tokenizing calibration text")
    try:
        return transformers.AutoTokenizer.from_pretrained(folder)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError...
        raise InvalidInputError(f"--tokenizer '{folder}' is not a usable Hugging Face tokenizer folder "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). "
                                "Save one with tokenizer.save_pretrained(DIR).") from exc


def _sentences(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"--data '{path}' is not UTF-8 text (byte {exc.start}): save the sentences "
                                "as UTF-8, one per line.") from exc
    sentences = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not sentences:
        raise InvalidInputError(f"--data '{path}' has no sentences: write one per line.")
    return sentences


def make_reader(args: argparse.Namespace, input_names: list[str]):
    """Pick the reader from the --data path."""
    from ..quant.data import ImageFolderReader, ImagePreprocess, NumpyReader, TextReader
    from . import _validate

    data: Path = args.data
    first = args.input_name or input_names[0]
    common = dict(batch_size=args.batch_size or 32, max_samples=args.max_samples, seed=args.seed,
                  shuffle=args.shuffle)
    if data.is_dir():
        h, w = _validate.image_size(args.image_size)
        channels = (1,) if args.grayscale else (1, 3)
        hint = " (--grayscale: give one value)" if args.grayscale else ""
        mean = _validate.float_list("--image-mean" + hint, args.image_mean, channels)
        std = _validate.float_list("--image-std" + hint, args.image_std, channels, positive=True)
        pre = ImagePreprocess(size=(h, w), resize=args.image_resize or None, mean=mean, std=std,
                              grayscale=args.grayscale)
        return ImageFolderReader(data, first, pre, **common)
    if data.suffix in (".npz", ".npy"):
        arrays = _validate.load_arrays(data, "--data")
        if set(arrays) == {""}:
            arrays = {first: arrays[""]}
        elif len(input_names) == 1 and len(arrays) == 1 and first not in arrays:
            arrays = {first: next(iter(arrays.values()))}
        missing = sorted(set(input_names) - set(arrays))
        if missing:
            raise InvalidInputError(f"--data '{data}' has arrays {sorted(arrays)} but the model's inputs are "
                                    f"{input_names} (missing {missing}): save one array per input name "
                                    "(np.savez(path, **{name: array})).")
        return NumpyReader({n: arrays[n] for n in input_names}, **common)
    if data.suffix == ".txt":
        if not args.tokenizer:
            raise InvalidInputError("Text calibration data needs --tokenizer DIR (a Hugging Face tokenizer).")
        sentences = _sentences(data)
        return TextReader(sentences, _tokenizer(args.tokenizer), input_names=input_names,
                          max_length=args.max_length, **common)
    if not data.exists():
        raise InvalidInputError(f"--data '{data}' does not exist.")
    raise InvalidInputError(f"Cannot tell what '{data}' holds: give a .npz/.npy, a folder of images or a "
                            ".txt of sentences.")


def check_options(args: argparse.Namespace) -> None:
    """Everything about the options that can be checked before reading any file."""
    from . import _validate

    _validate.at_least("--batch-size", args.batch_size, 1)
    _validate.at_least("--max-samples", args.max_samples, 1)
    _validate.at_least("--select-samples", args.select_samples, 1)
    _validate.at_least("--seed", args.seed, 0)
    _validate.at_least("--image-resize", args.image_resize, 0)
    _validate.at_least("--max-length", args.max_length, 1)
    _validate.num_bins(args.num_bins)
    if not 0 < args.percentile <= 100:
        raise InvalidInputError(f"--percentile must be in (0, 100], got {args.percentile}.")
    if args.trt_cache:
        from ..quant.trt_cache import trt_version_code
        trt_version_code(args.trt_version)
    from ._paths import Output, check_paths
    check_paths({"model": args.model, "--data": args.data, "--tokenizer": args.tokenizer},
                {"-o": Output(args.output, sidecar=True), "--trt-cache": Output(args.trt_cache, sidecar=True)})


def check_model(model, args: argparse.Namespace) -> list[str]:  # noqa: ANN001 - onnx.ModelProto
    import onnx.defs

    from ..onnx_io import graph_inputs, iter_nodes
    from . import _validate

    names = [s.name for s in graph_inputs(model)]
    if not names:
        raise InvalidInputError(f"'{args.model}' has no inputs, so there is nothing to calibrate: give the "
                                "model that takes the data.")
    if not any(True for _ in iter_nodes(model.graph)):
        raise InvalidInputError(f"'{args.model}' has no nodes, so there is nothing to calibrate.")
    if args.input_name:
        _validate.known_names("--input-name", [args.input_name], names)
    nodes = list(iter_nodes(model.graph))
    unknown = sorted({n.op_type for n in nodes if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)})
    if unknown:
        raise InvalidInputError(f"'{args.model}' uses {', '.join(unknown)}, which {'is' if len(unknown) == 1 else 'are'} "
                                "not ONNX operator(s): ONNX Runtime cannot run the model to calibrate it. Check "
                                "the op names (or the domain of custom ops) where the model was made.")
    _validate.warn_unknown("--exclude-nodes", _csv(args.exclude_nodes), {n.name for n in nodes}, "node")
    _validate.warn_unknown("--exclude-ops", _csv(args.exclude_ops), {n.op_type for n in nodes}, "op type")
    return names


def check_reader(reader, model, args: argparse.Namespace) -> None:  # noqa: ANN001
    """Check the data against the model's inputs before calibrating (casts float64 data)."""
    from ..onnx_io import graph_inputs
    from ..quant.data import NumpyReader
    from . import _validate

    specs = graph_inputs(model)
    if isinstance(reader, NumpyReader):
        reader.arrays = _validate.check_arrays(reader.arrays, specs, f"--data '{args.data}'")
        return
    first = next(iter(reader), None)
    if first is None:
        raise InvalidInputError(f"--data '{args.data}' gave no samples.")
    _validate.check_arrays(first, specs, f"--data '{args.data}'")


def run(args: argparse.Namespace) -> int:
    from ..artifacts import load_onnx
    from ..quant import CalibrationOptions, calibrate, write_trt_cache

    check_options(args)
    model = load_onnx(args.model)
    input_names = check_model(model, args)
    reader = make_reader(args, input_names)
    from ..quant.batching import fixed_sequence_length
    from ..quant.data import TextReader
    if isinstance(reader, TextReader) and fixed_sequence_length(model):
        reader.pad_to_length = fixed_sequence_length(model)  # a fixed-length export takes no other
    check_reader(reader, model, args)
    scope = args.scope or ("all" if args.trt_cache else "qdq")
    opts = CalibrationOptions(method=args.method, num_bins=args.num_bins, percentile=args.percentile,
                              max_samples=args.max_samples, batch_size=args.batch_size or 32, seed=args.seed,
                              scope=scope, exclude_nodes=_csv(args.exclude_nodes),
                              exclude_op_types=_csv(args.exclude_ops), target=args.target,
                              select_samples=args.select_samples)
    result = calibrate(model, reader, opts)
    result.validate(f"Calibrating '{args.model}' on '{args.data}'")
    if args.trt_cache:
        # The old cache belongs to the old ranges: never leave it beside the new ones.
        from ..artifacts import remove_artifact
        remove_artifact(args.trt_cache)
    result.save(args.output)
    print(f"calibrated {len(result)} tensors on {result.num_samples} samples ({args.method}) -> {args.output}")
    if "converted_from_opset" in result.settings:
        print(f"note: the model is opset {result.settings['converted_from_opset']}; it was calibrated after "
              "onnx.version_converter to opset 13 (per-channel Q/DQ needs it); `trt-edge quantize` converts the same way")
    if "model_fixed_batch" in result.settings:
        print(f"note: the model has a fixed batch of {result.settings['model_fixed_batch']}; the data ran in "
              "batches of that size")
    if "quality_warning" in result.settings:
        w = result.settings["quality_warning"]
        print(f"WARNING: low INT8 quality: output SQNR {w['final_db']:.1f} dB (below {w['threshold_db']:.1f}); "
              f"noisiest tensors: {', '.join(t for t, _ in w['noisiest_tensors'])}. Try `trt-edge quantize "
              "--keep-worst N --data SAMPLES.npz` (per-layer sensitivity) to keep the worst layers in float.")
    if "auto_selection" in result.settings:
        from ..quant.select import SelectionReport
        print(SelectionReport(**result.settings["auto_selection"]).summary())
    if args.trt_cache:
        write_trt_cache(result, args.trt_cache, trt_version=args.trt_version)
        print(f"TensorRT {args.trt_version} EntropyCalibration2 cache -> {args.trt_cache}")
    return 0
