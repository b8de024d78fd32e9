"""LiteRT vs our ONNX Runtime path on MediaPipe's .tflite models, batch 1, one interleaved run.

For every model in ``mediapipe==0.10.14`` (``--no-deps``) this script

1. measures converter coverage: ``tflite2onnx`` (the pure-Python converter, if installed) and
   ours (``trt_edge.tflite``) on the same file, each checked against LiteRT on random inputs;
2. builds our CPU path: import -> ``optimize`` (default passes) -> ORT FP32, and
   -> ``calibrate`` (max, 8 real photos) -> ``quantize`` (target onnxruntime) -> ORT INT8;
3. times, interleaved round by round (so machine load hits every configuration alike):
   LiteRT with XNNPACK at 1 and 2 threads, ORT FP32 and ORT INT8 at 1 and 2 threads, one call
   of each in turn; median over all calls per configuration, and latency ratios ORT / LiteRT at equal threads (> 1: LiteRT faster).

    python benchmarks/bench_tflite.py --json benchmarks/results/tflite.json
    python benchmarks/bench_tflite.py --models iris_landmark,palm_detection_lite --rounds 3

Records the load average (``os.getloadavg``) before and after: other work on the machine
moves absolute times; the ratios, measured side by side, move less.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from trt_edge.artifacts import atomic_write_json, machine_info, tool_versions  # noqa: E402
from trt_edge.errors import TrtEdgeError  # noqa: E402

log = logging.getLogger("bench_tflite")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "cat", "hubble_deep_field", "immunohistochemistry")


def photos(h: int, w: int) -> np.ndarray:
    import skimage.data
    import skimage.transform
    out = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        out.append(skimage.transform.resize(img[..., :3] / 255.0, (h, w)).astype(np.float32))
    return np.stack(out)


def tflite2onnx_status(path: Path, tmp: Path) -> str:
    """'ok', 'wrong' (converts but disagrees with LiteRT), 'error: ...' or 'not installed'."""
    try:
        import tflite2onnx
    except ImportError:
        return "not installed"
    import onnxruntime as ort

    from trt_edge.tflite.verify import litert_interpreter, run_litert, sample_inputs
    out = tmp / (path.stem + ".t2o.onnx")
    logging.disable(logging.CRITICAL)
    try:
        tflite2onnx.convert(str(path), str(out))
    except BaseException as exc:  # noqa: BLE001 - the converter raises anything (even SystemExit)
        return f"error: {type(exc).__name__}: {str(exc)[:60]}"
    finally:
        logging.disable(logging.NOTSET)
    try:
        interp = litert_interpreter(path)
        feed = sample_inputs(interp, 0)
        ref = run_litert(interp, feed)
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        ins = {}
        for i, (k, v) in zip(sess.get_inputs(), feed.items()):
            ins[i.name] = v if list(i.shape) == list(v.shape) else v.transpose(0, 3, 1, 2)  # it emits NCHW
        got = sess.run(None, ins)
        for g, r in zip(got, ref.values()):
            g = g if g.shape == r.shape else g.transpose(0, 2, 3, 1)
            if g.shape != r.shape or np.max(np.abs(g - r)) > 1e-4 * max(np.max(np.abs(r)), 1e-2):
                return "wrong"
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"error at run: {type(exc).__name__}"


def time_config(fn: Callable[[], Any], budget_s: float) -> float:
    """Median seconds of one call over as many calls as fit in ``budget_s`` (at least 3)."""
    times = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e9)
    return statistics.median(times)


def prepare(name: str, path: Path, tmp: Path) -> dict[str, Any]:
    from trt_edge.graph import optimize
    from trt_edge.quant import CalibrationOptions, QuantizeOptions, calibrate, quantize_qdq
    from trt_edge.tflite import import_tflite
    from trt_edge.tflite.verify import litert_interpreter

    interp = litert_interpreter(path)
    d = interp.get_input_details()
    if len(d) != 1 or len(d[0]["shape"]) != 4:
        raise TrtEdgeError(f"{name}: not a single-image model")
    h, w = (int(v) for v in d[0]["shape"][1:3])
    imgs = photos(h, w)
    t0 = time.perf_counter()
    res = import_tflite(path, tmp / f"{name}.onnx")
    import_s = time.perf_counter() - t0
    opt, _ = optimize(res.model)
    ranges = calibrate(opt, {d[0]["name"]: imgs}, CalibrationOptions(method="max", target="onnxruntime",
                                                                     show_progress=False))
    int8 = quantize_qdq(opt, ranges, QuantizeOptions(target="onnxruntime"))
    feed = {d[0]["name"]: imgs[:1]}
    return {"name": name, "path": path, "fp32": opt, "int8": int8, "feed": feed, "import_s": import_s,
            "transposes": res.onnx_ops.get("Transpose", 0), "worst_err": max(
                o.max_abs_error for v in res.verification for o in v.report.outputs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="comma-separated model names (default: every runnable one)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median over them)")
    ap.add_argument("--budget", type=float, default=0.3,
                    help="per model and round: about this many seconds of calls per configuration")
    ap.add_argument("--json", default=str(HERE / "results" / "tflite.json"))
    ap.add_argument("--plot", default=str(HERE / "results" / "tflite.png"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    from trt_edge.runtime.litert import LiteRTOptions, LiteRTRunner
    from trt_edge.runtime.onnxrt import OnnxRuntimeRunner, OrtOptions
    from trt_edge.tflite.models import mediapipe_models
    from trt_edge.tflite.verify import litert_interpreter

    load_before = os.getloadavg()
    models = mediapipe_models()
    if args.models:
        models = {k: v for k, v in models.items() if k in set(args.models.split(","))}
    coverage: dict[str, dict[str, str]] = {}
    prepared = []
    with tempfile.TemporaryDirectory(prefix="bench_tflite_") as tmpd:
        tmp = Path(tmpd)
        for name, path in models.items():
            try:
                litert_interpreter(path)
                runnable = True
            except TrtEdgeError:
                runnable = False
            cov = {"litert_runs": "yes" if runnable else "no (custom ops)", "tflite2onnx": tflite2onnx_status(path, tmp)}
            try:
                p = prepare(name, path, tmp) if runnable else None
                cov["trt_edge"] = "ok" if p else "refused (clear error)"
                if p:
                    prepared.append(p)
            except TrtEdgeError as exc:
                cov["trt_edge"] = f"error: {str(exc)[:80]}"
            coverage[name] = cov
            print(f"{name:38s} litert={cov['litert_runs']:16s} tflite2onnx={cov['tflite2onnx'][:40]:40s} "
                  f"trt_edge={cov['trt_edge'][:40]}", flush=True)

        configs: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
            ("litert_xnnpack_t1", lambda p: LiteRTRunner(p["path"], LiteRTOptions(num_threads=1))),
            ("litert_xnnpack_t2", lambda p: LiteRTRunner(p["path"], LiteRTOptions(num_threads=2))),
            ("ort_fp32_t1", lambda p: OnnxRuntimeRunner(p["fp32"], OrtOptions(intra_op_threads=1))),
            ("ort_fp32_t2", lambda p: OnnxRuntimeRunner(p["fp32"], OrtOptions(intra_op_threads=2))),
            ("ort_int8_t1", lambda p: OnnxRuntimeRunner(p["int8"], OrtOptions(intra_op_threads=1))),
            ("ort_int8_t2", lambda p: OnnxRuntimeRunner(p["int8"], OrtOptions(intra_op_threads=2))),
        ]
        results: dict[str, dict[str, list[float]]] = {p["name"]: {c: [] for c, _ in configs} for p in prepared}
        runners = {(p["name"], c): make(p).activate() for p in prepared for c, make in configs}
        try:
            for p in prepared:  # warm-up
                for c, _ in configs:
                    for _ in range(3):
                        runners[(p["name"], c)].infer(p["feed"])
            # Interleaved call by call (A B C ... A B C ...), so load from other work on the machine
            # lands on every configuration alike; the order flips every round.
            for r in range(args.rounds):
                for p in prepared:
                    order = configs if r % 2 == 0 else list(reversed(configs))
                    slowest = max(time_config(lambda: runners[(p["name"], c)].infer(p["feed"], check_inputs=False), 0)
                                  for c, _ in order)
                    calls = max(3, int(args.budget / max(slowest, 1e-4)))
                    for _ in range(calls):
                        for c, _ in order:
                            runner = runners[(p["name"], c)]
                            t0 = time.perf_counter_ns()
                            runner.infer(p["feed"], check_inputs=False)
                            results[p["name"]][c].append((time.perf_counter_ns() - t0) / 1e9)
                print(f"round {r + 1}/{args.rounds} done", flush=True)
        finally:
            for runner in runners.values():
                runner.deactivate()
    load_after = os.getloadavg()

    rows = []
    header = (f"{'model':34s}{'LiteRT t1':>10s}{'LiteRT t2':>10s}{'FP32 t1':>9s}{'FP32 t2':>9s}{'INT8 t1':>9s}"
              f"{'INT8 t2':>9s}   FP32/LiteRT t1 t2   INT8/LiteRT t1 t2")
    print("\nmedian latency, ms (batch 1); ratio = ORT / LiteRT at equal threads (>1: LiteRT faster)")
    print(header)
    for p in prepared:
        med = {c: statistics.median(v) * 1e3 for c, v in results[p["name"]].items()}
        best = {c: min(v) * 1e3 for c, v in results[p["name"]].items()}
        ratios = {f"{prec}_t{t}": med[f"ort_{prec}_t{t}"] / med[f"litert_xnnpack_t{t}"]
                  for prec in ("fp32", "int8") for t in (1, 2)}
        best_ratios = {f"{prec}_t{t}": best[f"ort_{prec}_t{t}"] / best[f"litert_xnnpack_t{t}"]
                       for prec in ("fp32", "int8") for t in (1, 2)}
        rows.append({"model": p["name"], "median_ms": med, "min_ms": best, "ratio_ort_over_litert": ratios,
                     "min_ratio_ort_over_litert": best_ratios, "calls": len(results[p["name"]]["ort_fp32_t1"]),
                     "import_s": p["import_s"], "transposes": p["transposes"]})
        print(f"{p['name'][:33]:34s}{med['litert_xnnpack_t1']:10.2f}{med['litert_xnnpack_t2']:10.2f}"
              f"{med['ort_fp32_t1']:9.2f}{med['ort_fp32_t2']:9.2f}{med['ort_int8_t1']:9.2f}{med['ort_int8_t2']:9.2f}"
              f"   {ratios['fp32_t1']:6.2f} {ratios['fp32_t2']:5.2f}       {ratios['int8_t1']:6.2f} {ratios['int8_t2']:5.2f}")
    geo: dict[str, float] = {}
    geo_min: dict[str, float] = {}
    if rows:
        geo = {k: float(np.exp(np.mean([np.log(r["ratio_ort_over_litert"][k]) for r in rows])))
               for k in rows[0]["ratio_ort_over_litert"]}
        geo_min = {k: float(np.exp(np.mean([np.log(r["min_ratio_ort_over_litert"][k]) for r in rows])))
                   for k in rows[0]["min_ratio_ort_over_litert"]}
        print(f"{'geometric mean of ratios':34s}{'':56s}   {geo['fp32_t1']:6.2f} {geo['fp32_t2']:5.2f}"
              f"       {geo['int8_t1']:6.2f} {geo['int8_t2']:5.2f}")
        print("\nbest (minimum) latency, ms: less sensitive to other work on a shared machine")
        print(header)
        for r in rows:
            b, q = r["min_ms"], r["min_ratio_ort_over_litert"]
            print(f"{r['model'][:33]:34s}{b['litert_xnnpack_t1']:10.2f}{b['litert_xnnpack_t2']:10.2f}"
                  f"{b['ort_fp32_t1']:9.2f}{b['ort_fp32_t2']:9.2f}{b['ort_int8_t1']:9.2f}{b['ort_int8_t2']:9.2f}"
                  f"   {q['fp32_t1']:6.2f} {q['fp32_t2']:5.2f}       {q['int8_t1']:6.2f} {q['int8_t2']:5.2f}")
        print(f"{'geometric mean of ratios':34s}{'':56s}   {geo_min['fp32_t1']:6.2f} {geo_min['fp32_t2']:5.2f}"
              f"       {geo_min['int8_t1']:6.2f} {geo_min['int8_t2']:5.2f}")
    n_ours = sum(1 for c in coverage.values() if c["trt_edge"] == "ok")
    n_t2o = sum(1 for c in coverage.values() if c["tflite2onnx"] == "ok")
    n_run = sum(1 for c in coverage.values() if c["litert_runs"] == "yes")
    print(f"\ncoverage: LiteRT runs {n_run}/{len(coverage)}; correct conversions: trt_edge {n_ours}, "
          f"tflite2onnx {n_t2o}")
    print(f"load average before {load_before}, after {load_after}")
    data = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(), "tool_versions": tool_versions(), "load_average": [load_before, load_after],
            "rounds": args.rounds, "budget_s": args.budget, "coverage": coverage, "results": rows,
            "geomean_ratio_ort_over_litert": geo, "geomean_min_ratio_ort_over_litert": geo_min}
    atomic_write_json(args.json, data)
    print(f"wrote {args.json}")
    if rows and args.plot:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots(figsize=(10, 4.5))
            names = [r["model"] for r in rows]
            x = np.arange(len(names))
            for i, key in enumerate(("fp32_t1", "fp32_t2", "int8_t1", "int8_t2")):
                ax.bar(x + (i - 1.5) * 0.2, [r["ratio_ort_over_litert"][key] for r in rows], 0.2, label=key)
            ax.axhline(1.0, color="k", lw=0.8)
            ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
            ax.set_ylabel("ORT latency / LiteRT latency (>1: LiteRT faster)")
            ax.set_title("MediaPipe models, batch 1, CPU: our ORT path vs LiteRT XNNPACK (equal threads)")
            ax.legend(fontsize=8)
            fig.tight_layout()
            Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(args.plot, dpi=110)
            print(f"wrote {args.plot}")
        except ImportError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
