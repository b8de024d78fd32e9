"""TensorRT engines for MNIST and MobileNetV2 in FP32/FP16/INT8: build, compare with ORT, time.

For each model and precision: build the engine with ``trt_edge.build`` (timing
cache shared, INT8 through our calibration + Q/DQ), compare its outputs with
ONNX Runtime's FP32 on real data (MNIST digits: accuracy; ImageNet photos:
top-1 agreement; both: SQNR), then time it the trtexec way
(``trt_edge.bench.trt_timing.benchmark_gpu``: H2D / GPU compute / D2H / enqueue /
end-to-end percentiles, throughput) with and without CUDA graphs and data
transfers. Configurations are interleaved within each repeat; the median of
the repeats' medians is reported. On Jetson, the power mode and tegrastats
power/energy are recorded too. Prints a table and writes JSON.

    python benchmarks/bench_trt.py --repeats 3 --json benchmarks/results/trt.json

Needs TensorRT, pycuda and an NVIDIA GPU; elsewhere it exits with status 2 and
says so (the CPU machines have none).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import logging
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_JSON = Path(__file__).parent / "results" / "trt.json"
log = logging.getLogger("bench_trt")


def _models(workdir: Path, mnist_seconds: float) -> list[dict[str, Any]]:
    import torch

    from trt_edge.data.images import imagenet_photos
    from trt_edge.data.mnist import load_mnist
    from trt_edge.export import ExportOptions, export_onnx
    from trt_edge.models.mnist import train_mnist_cnn
    from trt_edge.models.mobilenetv2 import mobilenet_v2_imagenet

    split = load_mnist()
    mnist = train_mnist_cnn(split, seconds=mnist_seconds, seed=0)
    eo = ExportOptions(input_names=["input"], output_names=["logits"], exporter="torchscript")
    mnist_path = export_onnx(mnist, torch.from_numpy(split.x_test[:2]), workdir / "mnist.onnx", eo).path
    photos = imagenet_photos()[0]
    mob_path = export_onnx(mobilenet_v2_imagenet(), torch.from_numpy(photos[:2]),
                           workdir / "mobilenet_v2.onnx", eo).path
    return [
        {"name": "mnist_cnn", "onnx": mnist_path, "x": split.x_test[:512], "y": split.y_test[:512],
         "calib": split.x_train[:512], "shapes": "input:1x1x28x28/32x1x28x28/512x1x28x28", "batch": 32},
        {"name": "mobilenet_v2", "onnx": mob_path, "x": photos, "y": None, "calib": photos,
         "shapes": "input:1x3x224x224/8x3x224x224/16x3x224x224", "batch": 8},
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--precisions", default="fp32,fp16,int8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--mnist-seconds", type=float, default=20.0, help="MNIST CNN training budget")
    ap.add_argument("--workspace", default="2G")
    ap.add_argument("--engines", type=Path, default=None, help="keep engines here (default: temp dir)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from trt_edge.build import tensorrt_available
    if not tensorrt_available():
        print("bench_trt: TensorRT not installed (and this needs an NVIDIA GPU with pycuda): nothing "
              "to measure here. Run it on a Jetson or GPU workstation with `pip install "
              "'trt-edge[tensorrt]'`.", file=sys.stderr)
        return 2

    from trt_edge.artifacts import atomic_write_json, machine_info, sha256_file, tool_versions
    from trt_edge.build import BuildOptions, parse_profiles, parse_size
    from trt_edge.build.builder import build_engine
    from trt_edge.numerics import compare_outputs
    from trt_edge.runtime.onnxrt import run_onnx
    from trt_edge.bench.trt_timing import benchmark_gpu
    from trt_edge.runtime.tensorrt import TensorRTRunner

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    modes = [("graph_off", False, True), ("graph_on", True, True), ("no_transfers", True, False)]
    with tempfile.TemporaryDirectory(prefix="bench_trt.") as tmp:
        work = Path(tmp)
        engines = args.engines or work / "engines"
        engines.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = []
        for m in _models(work, args.mnist_seconds):
            ref_all = run_onnx(str(m["onnx"]), {"input": m["x"]})["logits"]
            calib = work / f"{m['name']}.calib.npz"
            np.savez(calib, input=m["calib"])
            for prec in precisions:
                plan = engines / f"{m['name']}.{prec}.plan"
                built = build_engine(m["onnx"], plan, BuildOptions(
                    precision=prec, profiles=parse_profiles([m["shapes"]]), workspace=parse_size(args.workspace),
                    timing_cache=engines / "timing.cache", calib_data=calib if prec == "int8" else None))
                runner = TensorRTRunner(plan)
                with runner:
                    got = np.concatenate([runner.infer({"input": m["x"][i:i + m["batch"]]})["logits"]
                                          for i in range(0, len(m["x"]), m["batch"])])
                    rep = compare_outputs({"logits": got}, {"logits": ref_all}, None, classifier=True).worst()
                    row: dict[str, Any] = {
                        "model": m["name"], "precision": prec, "build_s": built.build_time_s,
                        "engine_mb": plan.stat().st_size / 1e6, "engine_sha256": sha256_file(plan),
                        "sqnr_db": rep.sqnr_db, "top1_agreement_vs_ort": rep.top1_agreement}
                    if m["y"] is not None:
                        row["accuracy"] = float((got.argmax(1) == m["y"]).mean())
                        row["accuracy_ort_fp32"] = float((ref_all.argmax(1) == m["y"]).mean())
                    feed = {"input": m["x"][:m["batch"]]}
                    per_mode: dict[str, list[dict[str, Any]]] = {k: [] for k, _, _ in modes}
                    for _ in range(args.repeats):  # interleave the modes within each repeat
                        for key, graph, transfers in modes:
                            per_mode[key].append(benchmark_gpu(
                                runner, feed, warmup=20, iterations=args.iterations, cuda_graph=graph,
                                transfers=transfers, variants=False))
                    for key, reps in per_mode.items():
                        row[key] = {
                            "end_to_end_median_ms": statistics.median(r["end_to_end_ms"]["median"] for r in reps),
                            "end_to_end_p99_ms": statistics.median(r["end_to_end_ms"]["p99"] for r in reps),
                            "compute_median_ms": statistics.median(r["compute_ms"]["median"] for r in reps),
                            "enqueue_median_ms": statistics.median(r["enqueue_ms"]["median"] for r in reps),
                            "throughput_qps": statistics.median(r["throughput_qps"] for r in reps),
                            "samples_per_s": statistics.median(r["throughput_samples_per_s"] for r in reps),
                            "last_report": reps[-1]}
                    row["gpu"] = runner.describe().get("gpu")
                rows.append(row)
                log.info("%s %s done", m["name"], prec)
    hdr = f"{'model':<14}{'prec':<6}{'acc/top1':>9}{'sqnr dB':>9}{'e2e ms':>9}{'graph ms':>9}{'compute':>9}{'qps':>9}"
    print(hdr)
    for r in rows:
        acc = r.get("accuracy", r["top1_agreement_vs_ort"])
        print(f"{r['model']:<14}{r['precision']:<6}{acc:>9.3f}{r['sqnr_db']:>9.1f}"
              f"{r['graph_off']['end_to_end_median_ms']:>9.3f}{r['graph_on']['end_to_end_median_ms']:>9.3f}"
              f"{r['no_transfers']['compute_median_ms']:>9.3f}{r['graph_on']['throughput_qps']:>9.0f}")
    atomic_write_json(args.json, {
        "benchmark": "bench_trt", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv), "machine": machine_info(), "versions": tool_versions(), "rows": rows})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
