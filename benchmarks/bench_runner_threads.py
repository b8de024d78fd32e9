"""Throughput of the ONNX Runtime runner against the number of threads.

Two ways to use more cores, measured side by side on the same sessions:

- ``batch``: ``Runner.infer_batch(feeds, num_threads=N)`` - N callers share one
  session (intra-op threads = 1 each, so the callers are the parallelism);
- ``intra``: one caller, ``OrtOptions(intra_op_threads=N)`` - ORT splits each
  operator over N threads;
- ``nospin``: as ``intra`` with ``allow_spinning=False`` (workers sleep between ops);
- ``iobind``: the batch API with N=1 and ``io_binding=True`` (outputs written into
  the returned arrays directly) against the plain ``session.run`` path (N=1 rows);
- ``infer`` / ``raw``: ``Runner.infer`` (validation included) per call against
  ONNX Runtime's bare ``session.run``: the wrapper's overhead.

Then the pool of ``trt_edge.runtime.Model`` (issue 16):

- ``pool N/C``: ``Model.load(instances=N)`` with C caller threads each calling
  ``model.infer`` (throughput vs instances and callers, intra-op threads = 1);
- per-call overhead, interleaved in blocks, medians of per-call times:
  ``session.run`` bare vs ``Model.infer(check_inputs=False)`` (pool borrow +
  return + timing + result object) vs ``Model.infer`` (validation too) vs
  ``Runner.infer``, and ``InstancePool.acquire/release`` alone; on a tiny
  Gemm model (a ~10 us call, where overhead shows) and MNIST batch 1.

Workloads: the MNIST CNN (weights do not change CPU time, so it is not trained
here) at batch 1 and 32, and all-MiniLM-L6-v2 (real weights) at batch 1 x 32
tokens and batch 8 x 64 tokens. Configurations are interleaved within each
repeat and the median over repeats is reported; throughput = inferences / wall
time of a run of ``--seconds`` (the number of feeds per run is calibrated from a
warm-up). Prints a table and writes JSON (``--json``).

    python benchmarks/bench_runner_threads.py --threads 1,2,4 --repeats 5
    python benchmarks/bench_runner_threads.py --only-pool --instances 1,2,4 --callers 1,2,4,8
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
from typing import Any

import numpy as np

from trt_edge.artifacts import atomic_write_json, machine_info, tool_versions
from trt_edge.runtime import InstancePool, Model, OnnxRuntimeRunner, OrtOptions

log = logging.getLogger("bench_runner_threads")
DEFAULT_JSON = Path(__file__).parent / "results" / "runner_threads.json"


def export_models(workdir: Path, with_minilm: bool) -> dict[str, Path]:
    import torch

    from trt_edge.export import ExportOptions, export_onnx
    from trt_edge.models.mnist import MnistCNN

    torch.manual_seed(0)
    paths = {"mnist": export_onnx(MnistCNN().eval(), torch.zeros(2, 1, 28, 28), workdir / "mnist.onnx",
                                  ExportOptions(input_names=["input"], output_names=["logits"],
                                                exporter="torchscript")).path}
    if with_minilm:
        from trt_edge.models.minilm import load_minilm
        bundle = load_minilm()
        feed = bundle.tokenize(["A robot arm picks up the red cube.", "Sensors report a blocked path ahead."])
        axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                "embeddings": {0: "batch"}}
        paths["minilm"] = export_onnx(
            bundle.module, tuple(torch.from_numpy(feed[k]) for k in ("input_ids", "attention_mask")),
            workdir / "minilm.onnx", ExportOptions(input_names=["input_ids", "attention_mask"],
                                                   output_names=["embeddings"], dynamic_axes=axes,
                                                   exporter="torchscript")).path
    return paths


def workloads(paths: dict[str, Path]) -> list[tuple[str, Path, dict[str, np.ndarray], int]]:
    rng = np.random.default_rng(0)
    out: list[tuple[str, Path, dict[str, np.ndarray], int]] = []
    for batch in (1, 32):
        out.append((f"mnist b{batch}", paths["mnist"],
                    {"input": rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)}, batch))
    if "minilm" in paths:
        for batch, seq in ((1, 32), (8, 64)):
            ids = rng.integers(1000, 20000, (batch, seq)).astype(np.int64)
            ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
            out.append((f"minilm b{batch}x{seq}", paths["minilm"],
                        {"input_ids": ids, "attention_mask": np.ones((batch, seq), np.int64)}, batch))
    return out


def configs(threads: list[int]) -> list[tuple[str, int, OrtOptions]]:
    cfg: list[tuple[str, int, OrtOptions]] = []
    for n in threads:
        cfg.append(("batch", n, OrtOptions(intra_op_threads=1)))
    for n in threads:
        cfg.append(("intra", n, OrtOptions(intra_op_threads=n)))
    for n in threads:
        if n > 1:  # ORT's workers busy-wait by default; on a shared CPU that steals the callers' cores
            cfg.append(("nospin", n, OrtOptions(intra_op_threads=n, allow_spinning=False)))
    cfg.append(("iobind", 1, OrtOptions(intra_op_threads=1, io_binding=True)))
    cfg.append(("infer", 1, OrtOptions(intra_op_threads=1)))
    cfg.append(("raw", 1, OrtOptions(intra_op_threads=1)))
    return cfg


def measure(runner: OnnxRuntimeRunner, feed: dict[str, np.ndarray], mode: str, n: int, calls: int) -> float:
    """Inferences per second over ``calls`` calls."""
    feeds = [feed] * calls
    if mode == "raw":  # ONNX Runtime's own session.run: the floor our wrapper adds to
        names = runner.output_names
        session = runner.session
        t0 = time.perf_counter_ns()
        for f in feeds:
            session.run(names, f)
    elif mode == "infer":  # one validated Runner.infer per call
        t0 = time.perf_counter_ns()
        for f in feeds:
            runner.infer(f)
    else:
        t0 = time.perf_counter_ns()
        runner.infer_batch(feeds, num_threads=n if mode == "batch" else 1)
    return calls / ((time.perf_counter_ns() - t0) / 1e9)


def tiny_model() -> Any:
    """y = x @ W + b, x [batch, 16]: a call of a few microseconds, so wrapper overhead shows."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"])], "tiny", [x], [y],
                          [numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w"),
                           numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def pool_throughput(model: Model, feed: dict[str, np.ndarray], callers: int, calls: int) -> float:
    """Inferences per second of ``callers`` threads sharing ``model`` for ``calls`` calls in all."""
    import threading

    per = max(1, calls // callers)
    start = threading.Barrier(callers + 1)
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            for _ in range(per):
                model.infer(feed, check_inputs=False)
        except BaseException as exc:  # noqa: BLE001 - reported after the run
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(callers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter_ns()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return per * callers / ((time.perf_counter_ns() - t0) / 1e9)


def pool_rows(paths: dict[str, Path], instances: list[int], callers: list[int], repeats: int,
              seconds: float) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for name, path, feed, batch in (("mnist b1", paths["mnist"], {"input": rng.standard_normal(
            (1, 1, 28, 28)).astype(np.float32)}, 1), ("mnist b32", paths["mnist"], {"input": rng.standard_normal(
            (32, 1, 28, 28)).astype(np.float32)}, 32)):
        models = {n: Model.load(path, instances=n, options=OrtOptions(intra_op_threads=1)) for n in instances}
        try:
            probe = models[instances[0]]
            for _ in range(5):
                probe.infer(feed)
            t0 = time.perf_counter()
            for _ in range(5):
                probe.infer(feed)
            calls = max(16, int(seconds / ((time.perf_counter() - t0) / 5)))
            samples: dict[tuple[int, int], list[float]] = {(n, c): [] for n in instances for c in callers}
            for (n, c) in samples:  # warm the worker paths
                pool_throughput(models[n], feed, c, max(c, calls // 10))
            for _ in range(repeats):
                for (n, c) in samples:
                    samples[(n, c)].append(pool_throughput(models[n], feed, c, calls))
            for (n, c), vals in samples.items():
                stats = models[n].pool_stats()
                rows.append({"workload": name, "mode": "pool", "instances": n, "callers": c, "batch": batch,
                             "calls_per_run": calls, "inferences_per_s": statistics.median(vals),
                             "samples_per_s": statistics.median(vals) * batch, "runs": vals,
                             "peak_in_use": stats.peak_in_use})
        finally:
            for m in models.values():
                m.close()
        base = next(r["inferences_per_s"] for r in rows if r["workload"] == name and r["instances"] == instances[0]
                    and r["callers"] == callers[0])
        for r in rows:
            if r["workload"] == name:
                r["vs_first"] = r["inferences_per_s"] / base
        log.info("done: pool %s", name)
    return rows


def overhead_rows(paths: dict[str, Path], repeats: int, block: int = 300) -> list[dict[str, Any]]:
    """Median per-call time of bare session.run vs the pooled Model (same session), interleaved."""
    rng = np.random.default_rng(1)
    out: list[dict[str, Any]] = []
    for name, src, feed in (("tiny gemm b1", tiny_model(), {"x": rng.standard_normal((1, 16)).astype(np.float32)}),
                            ("mnist b1", paths["mnist"],
                             {"input": rng.standard_normal((1, 1, 28, 28)).astype(np.float32)})):
        model = Model.load(src, instances=1, options=OrtOptions(intra_op_threads=1))
        runner = model.runner
        session, names = runner.session, runner.output_names  # type: ignore[attr-defined]
        checked = model.validate(feed)
        pool = InstancePool([_Nothing()], name="bare pool")
        ways = {
            "session.run": lambda: session.run(names, checked),
            "Runner.infer_impl": lambda: runner.infer_impl(checked),  # what one instance runs
            "Model.infer(check_inputs=False)": lambda: model.infer(checked, check_inputs=False),
            "Model.infer": lambda: model.infer(feed),
            "Runner.infer": lambda: runner.infer(feed),
            "pool acquire+release": lambda: pool.release(pool.acquire()),
        }
        per_call: dict[str, list[float]] = {k: [] for k in ways}
        for fn in ways.values():  # warm up
            for _ in range(block // 3):
                fn()
        for _ in range(repeats):
            for key, fn in ways.items():
                times = []
                for _ in range(block):
                    t0 = time.perf_counter_ns()
                    fn()
                    times.append(time.perf_counter_ns() - t0)
                per_call[key].append(statistics.median(times) / 1e3)
        model.close()
        raw = statistics.median(per_call["session.run"])
        impl = statistics.median(per_call["Runner.infer_impl"])
        for key, vals in per_call.items():
            med = statistics.median(vals)
            out.append({"workload": name, "mode": "overhead", "way": key, "median_us": med,
                        "over_session_run_us": med - raw if key != "pool acquire+release" else med,
                        "over_infer_impl_us": med - impl if key != "pool acquire+release" else med,
                        "runs_us": vals})
        log.info("done: overhead %s", name)
    return out


class _Nothing:
    index = 0

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {}

    def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2,4", help="thread counts (default 1,2,4)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats; the median is reported")
    ap.add_argument("--seconds", type=float, default=0.3, help="target wall time of one measurement")
    ap.add_argument("--no-minilm", action="store_true", help="MNIST only (fast)")
    ap.add_argument("--json", default=str(DEFAULT_JSON), help=f"output JSON (default {DEFAULT_JSON})")
    ap.add_argument("--instances", default="1,2,4", help="Model pool sizes (default 1,2,4)")
    ap.add_argument("--callers", default="1,2,4,8", help="caller threads on the pool (default 1,2,4,8)")
    ap.add_argument("--only-pool", action="store_true", help="only the Model pool and overhead sections")
    ap.add_argument("--no-pool", action="store_true", help="skip the Model pool and overhead sections")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    threads = [int(t) for t in args.threads.split(",")]

    rows: list[dict[str, Any]] = []
    # Shared machines: record the load so a reader can tell a contended run from a clean one.
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_models(Path(tmp), with_minilm=not args.no_minilm and not args.only_pool)
        for name, path, feed, batch in ([] if args.only_pool else workloads(paths)):
            runners: list[tuple[str, int, OnnxRuntimeRunner]] = []
            for mode, n, opts in configs(threads):
                runner = OnnxRuntimeRunner(path, opts)
                runner.activate()
                runners.append((mode, n, runner))
            try:
                # Calibrate the number of calls per measurement from the single-thread latency.
                probe = runners[0][2]
                for _ in range(5):
                    probe.infer(feed)
                t0 = time.perf_counter()
                for _ in range(5):
                    probe.infer(feed)
                per_call = (time.perf_counter() - t0) / 5
                calls = max(8, int(args.seconds / per_call))
                samples: dict[tuple[str, int], list[float]] = {(m, n): [] for m, n, _ in runners}
                for mode, n, r in runners:  # warm every session (thread pools, allocators)
                    measure(r, feed, mode, n, max(4, calls // 10))
                for _ in range(args.repeats):
                    for mode, n, r in runners:
                        samples[(mode, n)].append(measure(r, feed, mode, n, calls))
            finally:
                for _, _, r in runners:
                    r.deactivate()
            base = statistics.median(samples[("batch", 1)])
            for (mode, n), vals in samples.items():
                med = statistics.median(vals)
                rows.append({"workload": name, "mode": mode, "threads": n, "batch": batch, "calls_per_run": calls,
                             "inferences_per_s": med, "samples_per_s": med * batch,
                             "speedup_vs_1_thread": med / base, "runs": vals})
            log.info("done: %s", name)
        pool: list[dict[str, Any]] = []
        overhead: list[dict[str, Any]] = []
        if not args.no_pool:
            pool = pool_rows(paths, [int(v) for v in args.instances.split(",")],
                             [int(v) for v in args.callers.split(",")], args.repeats, args.seconds)
            overhead = overhead_rows(paths, args.repeats)

    header = f"{'workload':<18}{'mode':<8}{'threads':>8}{'inf/s':>11}{'samples/s':>12}{'vs 1 thr':>10}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['workload']:<18}{row['mode']:<8}{row['threads']:>8}{row['inferences_per_s']:>11.1f}"
              f"{row['samples_per_s']:>12.1f}{row['speedup_vs_1_thread']:>10.2f}")
    if pool:
        print(f"\n{'workload':<12}{'instances':>10}{'callers':>9}{'inf/s':>11}{'samples/s':>12}{'vs first':>10}"
              f"{'peak busy':>11}")
        for row in pool:
            print(f"{row['workload']:<12}{row['instances']:>10}{row['callers']:>9}{row['inferences_per_s']:>11.1f}"
                  f"{row['samples_per_s']:>12.1f}{row['vs_first']:>10.2f}{row['peak_in_use']:>11}")
    if overhead:
        print(f"\n{'workload':<14}{'way':<34}{'median us/call':>16}{'over session.run':>18}{'over infer_impl':>17}")
        for row in overhead:
            print(f"{row['workload']:<14}{row['way']:<34}{row['median_us']:>16.2f}{row['over_session_run_us']:>18.2f}"
                  f"{row['over_infer_impl_us']:>17.2f}")
    result = {"benchmark": "runner_threads", "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine_info(), "tool_versions": tool_versions(), "repeats": args.repeats,
              "seconds_per_run": args.seconds, "load_average_before": load_before,
              "load_average_after": os.getloadavg(), "rows": rows,
              "pool_rows": pool, "overhead_rows": overhead}
    atomic_write_json(args.json, result)
    print(f"\nload average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {result['load_average_after'][0]:.2f}; {os.cpu_count()} CPUs")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
