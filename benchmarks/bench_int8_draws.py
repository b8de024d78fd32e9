"""INT8 quality over several calibration draws: ours against the peers, on the same draws.

On one calibration set (49 crops of 7 photos) and 104 held-out crops, the TensorRT placement's
agreement with FP32 moves by 3-5 points between near-equal choices of any calibrator
(docs/benchmarks/quant.md), so one run cannot rank two tools that are a few points apart. This
draws ``--draws`` calibration sets (49 new random crops of the same 7 calibration photos each, seeds
``--first-seed``...), calibrates every tool on each, and scores all of them on the same held-out
crops (the standard 104 plus ``--extra-per-photo`` more of each of the 13 held-out photos), with
ONNX Runtime's fusions off (Q/DQ in float: TensorRT's maths). ``--model mnist``: 512 training digits
drawn at random per draw (batches of 64), scored by accuracy on the 1,000 held-out test digits
(where one digit is 0.1 point). Reports each draw and the mean and standard deviation per tool:

- ours: ``calibrate`` (``auto``, ``--target tensorrt``, what ``trt-edge calibrate`` does) + the
  TensorRT placement; and ``--target onnxruntime`` + the ONNX Runtime placement;
- ONNX Runtime ``quantize_static`` (QDQ, per-channel, Entropy, symmetric int8: TensorRT-deployable);
- NVIDIA ModelOpt ONNX PTQ (INT8, entropy) from ``.venv-modelopt``, when it exists.

    python benchmarks/bench_int8_draws.py [--model mobilenet|mnist] [--draws 5] [--json PATH]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_int8 as b  # noqa: E402  (the cases, sessions and peers of the main INT8 benchmark)


def _outputs(case: Any, model: Any) -> np.ndarray:
    """The case's held-out outputs of ``model``, Q/DQ in float (as bench_int8 scores them)."""
    return case.outputs(b._runner(b._session(model, threads=2, float_qdq=True)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("mobilenet", "mnist"), default="mobilenet")
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=10, help="seed of the first draw (the standard set is seed 0)")
    p.add_argument("--extra-per-photo", type=int, default=32,
                   help="held-out crops per photo on top of the standard 104 (0: only those)")
    p.add_argument("--no-modelopt", action="store_true")
    p.add_argument("--work", type=Path, default=HERE / "results" / "int8_work")
    p.add_argument("--json", type=Path, help="default: benchmarks/results/int8_draws[_mnist].json")
    args = p.parse_args()
    if args.draws < 1 or args.extra_per_photo < 0:
        p.error("--draws must be >= 1 and --extra-per-photo >= 0")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("trt_edge").setLevel(logging.ERROR)  # per-draw calibration logs would bury the table
    import onnx

    from trt_edge.data.images import CALIBRATION_PHOTOS, photo_crops
    from trt_edge.quant import CalibrationOptions, QuantizeOptions, calibrate, quantize_qdq

    args.work.mkdir(parents=True, exist_ok=True)
    args.json = args.json or HERE / "results" / ("int8_draws.json" if args.model == "mobilenet" else "int8_draws_mnist.json")
    if args.model == "mobilenet":
        case: Any = b.MobileNetCase(args.work)
        if args.extra_per_photo:  # the standard 104 crops and the extra ones, scored together
            case.held = np.concatenate([case.held, b.held_out_crops(args.work, args.extra_per_photo)[0]])
        held = case.held
        batch, metric_name = 1, "agreement with FP32"
    else:
        case = b.MnistCase(args.work)
        held = case.split.x_test
        batch, metric_name = 64, "accuracy"
    fp32 = onnx.load(case.onnx)
    reference = _outputs(case, fp32)
    # MobileNetV2 has no labels for the photo crops: agreement with FP32's top-1; MNIST: the labels
    truth = reference.argmax(1) if args.model == "mobilenet" else case.split.y_test
    modelopt = b.MODELOPT_PY.exists() and not args.no_modelopt
    tools = ["ours_trt", "ours_ort", "ort_symmetric"] + (["modelopt"] if modelopt else [])
    draws: list[dict[str, Any]] = []
    t_start = time.time()
    for k in range(args.draws):
        seed = args.first_seed + k
        calib = args.work / f"{args.model}_calib_draw{seed}.npz"
        if not calib.exists():
            if args.model == "mobilenet":
                crops, _ = photo_crops(CALIBRATION_PHOTOS, 7, seed=seed)
            else:  # 512 training digits (the standard set is the first 512)
                pick = np.random.default_rng(seed).choice(len(case.split.x_train), 512, replace=False)
                crops = case.split.x_train[np.sort(pick)]
            np.savez(calib, input=crops)
        batches = b._batches(str(calib), batch)
        models: dict[str, Any] = {}
        for tool, target in (("ours_trt", "tensorrt"), ("ours_ort", "onnxruntime")):
            ranges = calibrate(fp32, batches, CalibrationOptions(target=target, show_progress=False))
            models[tool] = quantize_qdq(fp32, ranges, QuantizeOptions(target=target))
        ort_path = args.work / f"{case.name}.ort_draw{seed}.onnx"
        b.ort_quantize_static(case.onnx, ort_path, batches, symmetric=True, op_types=case.ort_op_types or None)
        models["ort_symmetric"] = onnx.load(ort_path)
        if modelopt:
            mo_path = args.work / f"{case.name}.modelopt_draw{seed}.onnx"
            saved_calib = case.calib
            case.calib = calib
            try:
                mo = b.run_modelopt(case, mo_path)
            finally:
                case.calib = saved_calib
            if mo is None or "error" in mo:
                raise RuntimeError(f"ModelOpt failed on draw {seed}: {(mo or {}).get('error', 'no venv')}")
            models["modelopt"] = onnx.load(mo_path)
        row: dict[str, Any] = {"seed": seed}
        for tool in tools:
            out = _outputs(case, models[tool])
            row[tool] = {"metric": float(np.mean(out.argmax(1) == truth)), "sqnr_db": b.sqnr_db(out, reference)}
        draws.append(row)
        print(f"draw {seed}: " + ", ".join(f"{t} {row[t]['metric']:.3f} / {row[t]['sqnr_db']:.2f} dB" for t in tools),
              flush=True)
    summary = {t: {f"{m}_{s}": f([d[t][m] for d in draws])
                   for m in ("metric", "sqnr_db")
                   for s, f in (("mean", statistics.mean), ("sd", lambda v: statistics.pstdev(v)))}
               for t in tools}
    wins = {t: {"metric": sum(d["ours_trt"]["metric"] > d[t]["metric"] for d in draws),
                "sqnr_db": sum(d["ours_trt"]["sqnr_db"] > d[t]["sqnr_db"] for d in draws)}
            for t in tools if t not in ("ours_trt", "ours_ort")}
    print(f"\n{case.name}, {args.draws} calibration draws x {len(held)} held-out samples (fusions off), "
          f"{time.time() - t_start:.0f} s; metric: {metric_name}" +
          (f" (FP32: {float(np.mean(reference.argmax(1) == truth)):.4f})" if args.model == "mnist" else ""))
    print(f"{'tool':<16}{'metric mean':>16}{'sd':>8}{'SQNR mean':>12}{'sd':>8}")
    for t in tools:
        s = summary[t]
        print(f"{t:<16}{s['metric_mean']:>16.4f}{s['metric_sd']:>8.4f}{s['sqnr_db_mean']:>12.2f}{s['sqnr_db_sd']:>8.2f}")
    for t, w in wins.items():
        print(f"ours (TensorRT placement) above {t}: {metric_name} in {w['metric']}/{args.draws} draws, "
              f"SQNR in {w['sqnr_db']}/{args.draws}")
    result = {"command": " ".join(sys.argv), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "processor": platform.processor()},
              "model": case.name, "metric": metric_name,
              "fp32_metric": float(np.mean(reference.argmax(1) == truth)),
              "held_out_samples": int(len(held)), "draws": draws, "summary": summary, "ours_trt_wins": wins}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.json)  # atomic: a reader never sees half a file
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
