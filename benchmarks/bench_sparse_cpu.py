"""CPU benchmark of the native SparseLinear kernels against dense NumPy / torch and scipy.sparse.

For each (size, sparsity, structure, batch) the same pruned matrix is run by
  dense-numpy   x @ W.T through NumPy's BLAS (threads pinned with threadpoolctl)
  dense-torch   torch.matmul (torch.set_num_threads)
  scipy-csr     scipy.sparse CSR @ x.T (scipy's sparse kernels are single-threaded)
  ours-<isa>-csr           our kernel on the interchange CSR (int32 indices: what ONNX and
                           TensorRT get), hardware-gather loop
  ours-<isa>-pcsr-gather   the CPU-only packed CSR (uint16 column indices in column panels),
  ours-<isa>-pcsr-loads    with the hardware-gather or the scalar-load (no gather) loop
  ours-<isa>-bsrRxC        (block-pruned matrices) the fastest BSR block shape by choose_format
  ours-<isa>-...-f16       (--fp16-values) packed CSR with FP16 value storage: changes the
                           weights (relative error <= 2**-11), so never counted as "best"
The "best" of our FP32 methods at each level is taken from the same interleaved medians;
the JSON also records what trt_edge.sparse.select.choose_format (cpu_layouts=True) picked
in its own, shorter timing.
for each SIMD level in --isa (forced with trt_edge.sparse.cpu.forced_isa; "auto" = what
this CPU gets by default). Every method uses --threads threads (default 1: like with like).
Calls are interleaved round-robin (every round runs every method once); medians are
reported, with p90/min in the JSON. Before timing, each of our kernels is checked against
``x @ W.T``.

Read-bandwidth floor: for each method, a streaming-read loop (trt_edge.sparse.cpu.stream_read:
sequential loads of the active SIMD width, with and without software prefetch; the faster
counts) over a buffer of the same byte count as the bytes the method must read (weight arrays
+ x), timed in the same rounds at the same SIMD level and thread count. "floor%" = floor time /
method time (100% = reads its bytes as fast as a plain streaming read). The right-hand
columns repeat the ratios from each method's fastest sample (min), the figure least
disturbed when other processes share the cores (long calls are preempted more often).

    python benchmarks/bench_sparse_cpu.py --quick                     # 4096^2, 90%, batch 1
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
      python benchmarks/bench_sparse_cpu.py --isa avx2 avx512 --sizes 4096 \\
      --sparsity 0.5 0.8 0.9 0.95 --batch 1 8 64 --structures 1x1 1x4 --rounds 30
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from trt_edge.artifacts import atomic_write_json, machine_info, tool_versions
from trt_edge.sparse import cpu, formats
from trt_edge.sparse.select import SelectOptions, choose_format

DEFAULT_JSON = Path(__file__).parent / "results" / "sparse_cpu.json"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pruned_matrix(rng: np.random.Generator, n: int, k: int, sparsity: float,
                  block: tuple[int, int]) -> np.ndarray:
    """A random matrix magnitude-pruned to ``sparsity`` in ``block`` units."""
    from trt_edge.compress.pruning import magnitude_mask
    w = rng.standard_normal((n, k)).astype(np.float32)
    return np.where(magnitude_mask(w, sparsity, block), w, 0).astype(np.float32)


@contextlib.contextmanager
def at_isa(isa: str) -> Iterator[None]:
    if isa == "auto":
        yield
    else:
        with cpu.forced_isa(isa):
            yield


def time_interleaved(methods: dict[str, tuple[str, Callable[[], Any]]], rounds: int, warmup: int = 2
                     ) -> dict[str, dict[str, float]]:
    """methods: name -> (SIMD level to force or "auto", call). Median/p90/min seconds."""
    lib = cpu.load_library()
    default = cpu.isa()

    def run(isa: str, fn: Callable[[], Any]) -> int:
        lib.tes_set_isa((default if isa == "auto" else isa).encode())
        t0 = time.perf_counter_ns()
        fn()
        return time.perf_counter_ns() - t0

    try:
        for _ in range(warmup):
            for isa, fn in methods.values():
                run(isa, fn)
        samples: dict[str, list[int]] = {name: [] for name in methods}
        for _ in range(rounds):
            for name, (isa, fn) in methods.items():
                samples[name].append(run(isa, fn))
    finally:
        lib.tes_set_isa(default.encode())
    return {name: {"median_s": float(np.median(s)) * 1e-9, "p90_s": float(np.percentile(s, 90)) * 1e-9,
                   "min_s": float(np.min(s)) * 1e-9}
            for name, s in samples.items()}


def bench_case(rng: np.random.Generator, n: int, k: int, sparsity: float, structure: tuple[int, int],
               batch: int, rounds: int, threads: int, isas: list[str], fp16_values: bool,
               torch_too: bool) -> dict[str, Any]:
    import scipy.sparse as sp

    w = pruned_matrix(rng, n, k, sparsity, structure)
    x = rng.standard_normal((batch, k)).astype(np.float32)
    ref = x.astype(np.float64) @ w.T.astype(np.float64)
    wt = np.ascontiguousarray(w.T)
    y_dense = np.empty((batch, n), np.float32)
    s_csr = sp.csr_matrix(w)
    xt = np.ascontiguousarray(x.T)
    csr = formats.to_csr(w)
    methods: dict[str, tuple[str, Callable[[], Any]]] = {
        "dense-numpy": ("auto", lambda: np.matmul(x, wt, out=y_dense)),
        "scipy-csr": ("auto", lambda: s_csr @ xt),
    }
    read_bytes = {"dense-numpy": w.nbytes + x.nbytes,
                  "scipy-csr": s_csr.data.nbytes + s_csr.indices.nbytes + s_csr.indptr.nbytes + x.nbytes}
    if torch_too:
        import torch
        tw, tx = torch.from_numpy(w), torch.from_numpy(x)
        methods["dense-torch"] = ("auto", lambda: torch.matmul(tx, tw.T))
        read_bytes["dense-torch"] = w.nbytes + x.nbytes
    kernels: dict[str, str] = {}
    choices: dict[str, Any] = {}
    for isa in isas:
        with at_isa(isa):
            level = cpu.isa()
            packed = formats.to_packed_csr(csr)
            candidates: list[tuple[str, Any, str]] = [
                (f"ours-{level}-csr", csr, "auto"),
                (f"ours-{level}-pcsr-gather", packed, "gather"),
                (f"ours-{level}-pcsr-loads", packed, "loads"),
            ]
            # what deployment code would pick (timed separately, before the interleaved run)
            choice = choose_format(w, SelectOptions(batch=batch, include_dense=False, repeats=5,
                                                    num_threads=threads, cpu_layouts=True,
                                                    blocks=formats.BLOCK_SHAPES if structure != (1, 1) else ()))
            choices[level] = {"label": choice.label, "seconds": choice.seconds, "skipped": choice.skipped}
            bsr_times = {lbl: t for lbl, t in choice.seconds.items() if lbl.startswith("bsr")}
            if bsr_times:
                lbl = min(bsr_times, key=bsr_times.__getitem__)
                br, bc = (int(v) for v in lbl[3:].split("x"))
                candidates.append((f"ours-{level}-{lbl}", formats.to_bsr(w, (br, bc)), "auto"))
            if fp16_values:
                f16 = formats.to_packed_csr(csr, value_dtype=np.float16)
                candidates += [(f"ours-{level}-pcsr-gather-f16", f16, "gather"),
                               (f"ours-{level}-pcsr-loads-f16", f16, "loads")]
            for name, weight, variant in candidates:
                kern = cpu.PreparedSparseLinear(weight, num_threads=threads, variant=variant)
                y = np.full((batch, n), np.nan, np.float32)
                got = kern(x, y)
                # a fast wrong kernel must not produce a figure (FP16 values: their own rounding)
                tol = 2e-3 if name.endswith("-f16") else 1e-4
                scale = np.abs(x).astype(np.float64) @ np.abs(w.T).astype(np.float64) + 1e-6
                worst = float(np.max(np.abs(got - ref) / scale)) if got.size else 0.0
                if not np.all(np.isfinite(got)) or worst > tol:
                    raise SystemExit(f"{name} disagrees with x @ W.T (worst relative error {worst:.3g}).")
                out = np.empty((batch, n), np.float32)
                methods[name] = (level, functools.partial(kern, x, out))
                read_bytes[name] = weight.nbytes + x.nbytes
                kernels[name] = formats_label(weight, variant)
    # streaming-read probes of the same byte counts, at each method's SIMD level
    for name, (isa, _fn) in list(methods.items()):
        level = cpu.isa() if isa == "auto" else isa
        buf = np.ones(read_bytes[name], np.uint8)
        for pf in (False, True):
            pname = f"~stream{'-pf' if pf else ''}[{name}]"
            methods[pname] = (level, functools.partial(cpu.stream_read, buf, threads, prefetch=pf))
    times = time_interleaved(methods, rounds)
    base = times["dense-numpy"]["median_s"]
    scipy_t = times["scipy-csr"]["median_s"]
    rows = {}
    for name, t in times.items():
        if name.startswith("~"):
            continue
        plain = times[f"~stream[{name}]"]["median_s"]
        pref = times[f"~stream-pf[{name}]"]["median_s"]
        floor = min(plain, pref)
        floor_min = min(times[f"~stream[{name}]"]["min_s"], times[f"~stream-pf[{name}]"]["min_s"])
        rows[name] = {**t, "speedup_vs_dense_numpy": base / t["median_s"],
                      "speedup_vs_scipy": scipy_t / t["median_s"],
                      # the same from the fastest sample of each (least disturbed by other load)
                      "speedup_vs_dense_numpy_min": times["dense-numpy"]["min_s"] / t["min_s"],
                      "speedup_vs_scipy_min": times["scipy-csr"]["min_s"] / t["min_s"],
                      "fraction_of_floor_min": floor_min / t["min_s"],
                      "read_bytes": read_bytes[name],
                      "gb_per_s": read_bytes[name] / t["median_s"] / 1e9,
                      "stream_floor_s": floor, "stream_plain_s": plain, "stream_prefetch_s": pref,
                      "floor_gb_per_s": read_bytes[name] / floor / 1e9,
                      "fraction_of_floor": floor / t["median_s"],
                      "simd": methods[name][0] if name.startswith("ours-") else "-",
                      "kernel": kernels.get(name, name)}
    best = {}
    for level in {r["simd"] for r in rows.values() if r["simd"] != "-"}:
        fp32 = [nm for nm, r in rows.items() if r["simd"] == level and not nm.endswith("-f16")]
        best[level] = min(fp32, key=lambda nm: rows[nm]["median_s"])
    return {"n": n, "k": k, "sparsity": sparsity, "structure": list(structure), "batch": batch,
            "threads": threads, "choose_format": choices, "best_fp32": best, "methods": rows}


def formats_label(weight: Any, variant: str) -> str:
    if isinstance(weight, formats.PackedCsrWeight):
        return f"pcsr-{variant}" + ("-f16" if weight.values.dtype == np.float16 else "") + \
            f" (uint16 idx, {weight.num_panels} panel{'s' if weight.num_panels > 1 else ''})"
    if isinstance(weight, formats.BsrWeight):
        return f"bsr{weight.block[0]}x{weight.block[1]} (int32 idx)"
    return "csr (int32 idx)"


def blas_info(threads: int) -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_info
    return [{k: v for k, v in lib.items() if k in ("internal_api", "version", "architecture", "num_threads",
                                                  "threading_layer", "prefix")}
            for lib in threadpool_info()]


def _bsr_cell(m: dict[str, Any], bsr: list[str], pre: str) -> str:
    return f"{m[bsr[0]]['median_s'] * 1e3:.2f} ({bsr[0][len(pre):]})" if bsr else "-"


def markdown_tables(payload: dict[str, Any]) -> str:
    """One markdown table per SIMD level from a result JSON (what docs/benchmarks/sparse.md shows)."""
    out = []
    levels = sorted({lv for r in payload["results"] for lv in r["best_fp32"]}, reverse=True)
    for level in levels:
        out.append(f"\n**{level}** (ms, medians; ratios and floor from medians, [from minima])\n")
        out.append("| sparsity | pruning | batch | dense NumPy | scipy CSR | ours csr | pcsr-gather | pcsr-loads "
                   "| bsr (chosen) | best | x NumPy | x scipy | floor % |")
        out.append("|" + "---|" * 13)
        for r in payload["results"]:
            m = r["methods"]
            pre = f"ours-{level}-"
            bsr = [nm for nm in m if nm.startswith(pre + "bsr")]
            best = m[r["best_fp32"][level]]
            best_label = r["best_fp32"][level][len(pre):]
            prune = "unstructured" if r["structure"] == [1, 1] else f"{r['structure'][0]}x{r['structure'][1]} blocks"
            out.append(
                f"| {r['sparsity']:.0%} | {prune} | {r['batch']} | {m['dense-numpy']['median_s'] * 1e3:.2f} "
                f"| {m['scipy-csr']['median_s'] * 1e3:.2f} | {m[pre + 'csr']['median_s'] * 1e3:.2f} "
                f"| {m[pre + 'pcsr-gather']['median_s'] * 1e3:.2f} | {m[pre + 'pcsr-loads']['median_s'] * 1e3:.2f} "
                f"| {_bsr_cell(m, bsr, pre)} "
                f"| {best_label} | {best['speedup_vs_dense_numpy']:.1f}x [{best['speedup_vs_dense_numpy_min']:.1f}x] "
                f"| {best['speedup_vs_scipy']:.1f}x [{best['speedup_vs_scipy_min']:.1f}x] "
                f"| {100 * best['fraction_of_floor']:.0f} [{100 * best['fraction_of_floor_min']:.0f}] |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096])
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--structures", nargs="+", default=["1x1", "1x4"],
                    help="pruning granularity: 1x1 = unstructured, RxC = blocks")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for every method (BLAS via threadpoolctl, torch, ours); default 1")
    ap.add_argument("--isa", nargs="+", default=["auto"],
                    help="SIMD levels to run our kernels at (avx512 avx2 baseline auto)")
    ap.add_argument("--fp16-values", action="store_true",
                    help="also run packed CSR with FP16 value storage (changes the weights)")
    ap.add_argument("--no-torch", action="store_true", help="skip dense torch")
    ap.add_argument("--quick", action="store_true", help="only 4096x4096, 90%%, batch 1, unstructured")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", type=Path, help="render the tables of an existing result JSON and exit")
    args = ap.parse_args(argv)
    if args.markdown:
        import json
        print(markdown_tables(json.loads(args.markdown.read_text())))
        return 0
    if args.quick:
        args.sizes, args.sparsity, args.batch, args.structures = [4096], [0.9], [1], ["1x1"]
    if args.threads < 1:
        ap.error("--threads must be >= 1 (every method gets the same count)")
    from threadpoolctl import threadpool_limits
    supported = cpu.supported_isas()
    for isa in args.isa:
        if isa != "auto" and isa not in supported:
            ap.error(f"--isa {isa}: this CPU/library runs {', '.join(supported)} (or auto)")
    torch_threads = None
    if not args.no_torch:
        import torch
        torch.set_num_threads(args.threads)
        torch_threads = torch.get_num_threads()
    rng = np.random.default_rng(args.seed)
    results = []
    with threadpool_limits(limits=args.threads):
        blas = blas_info(args.threads)
        blas_txt = "; ".join(f"{b.get('internal_api')} {b.get('version')} "
                             + (f"kernel {b.get('architecture')} " if b.get("architecture") else "")
                             + f"threads {b.get('num_threads')}" for b in blas if b.get("internal_api"))
        load = os.getloadavg()
        print(f"# trt_edge sparse CPU benchmark on {cpu_model()} ({os.cpu_count()} CPUs), "
              f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"# library: {cpu.build_info()}")
        print(f"# SIMD levels here: {', '.join(supported)}; default {cpu.isa()}; run: {', '.join(args.isa)}")
        print(f"# threads: numpy BLAS {args.threads} ({blas_txt}); torch {torch_threads}; "
              f"scipy.sparse 1 (single-threaded); ours num_threads={args.threads}")
        header = (f"{'size':>9} {'spars':>5} {'prune':>5} {'batch':>5}  {'method':<26} {'kernel':<34} "
                  f"{'median':>9} {'x numpy':>7} {'x scipy':>7} {'GB/s':>6} {'floor%':>6}  "
                  f"{'min':>8} {'x numpy':>7} {'x scipy':>7} {'floor%':>6}")
        print(header)
        print("-" * len(header))
        for size in args.sizes:
            for sparsity in args.sparsity:
                for structure in args.structures:
                    br, bc = (int(v) for v in structure.split("x"))
                    block = (br, bc)
                    for batch in args.batch:
                        r = bench_case(rng, size, size, sparsity, block, batch, args.rounds, args.threads,
                                       args.isa, args.fp16_values, not args.no_torch)
                        results.append(r)
                        for name, m in r["methods"].items():
                            print(f"{size:>4}x{size:<4} {sparsity:>5.0%} {structure:>5} {batch:>5}  {name:<26} "
                                  f"{m['kernel'][:34]:<34} {m['median_s'] * 1e3:>7.3f}ms "
                                  f"{m['speedup_vs_dense_numpy']:>6.2f}x {m['speedup_vs_scipy']:>6.2f}x "
                                  f"{m['gb_per_s']:>6.1f} {100 * m['fraction_of_floor']:>5.0f}%  "
                                  f"{m['min_s'] * 1e3:>6.3f}ms {m['speedup_vs_dense_numpy_min']:>6.2f}x "
                                  f"{m['speedup_vs_scipy_min']:>6.2f}x {100 * m['fraction_of_floor_min']:>5.0f}%")
                        sys.stdout.flush()
        load_end = os.getloadavg()
    payload = {"benchmark": "sparse_cpu", "date": dt.datetime.now(dt.timezone.utc).isoformat(),
               "command": " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:])),
               "cpu": cpu_model(), "machine": machine_info(), "versions": tool_versions(),
               "library": cpu.build_info(), "simd_supported": supported, "simd_default": cpu.isa(),
               "simd_run": args.isa, "threads": {"numpy_blas": args.threads, "torch": torch_threads,
                                                 "scipy": 1, "ours": args.threads},
               "blas": blas, "load_average_start": list(load), "load_average_end": list(load_end),
               "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                      "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
               "results": results}
    path = atomic_write_json(args.json, payload)
    print(f"# load average at the end {load_end[0]:.2f}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
