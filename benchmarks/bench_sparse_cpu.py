"""CPU benchmark of the native SparseLinear kernel against dense NumPy / torch and scipy.sparse.

For each (size, sparsity, structure, batch): the same pruned matrix is run by
  dense-numpy  x @ W.T (BLAS),  dense-torch  torch.matmul (same threads),
  scipy-csr    scipy.sparse CSR @ x.T,
  ours-csr     trt_edge CPU kernel, CSR,
  ours-bsr     trt_edge CPU kernel, BSR with the block shape chosen by measured speed
               (trt_edge.sparse.select.choose_format), when the structure allows blocks.
Calls are interleaved round-robin (every round runs every method once) and the median
over rounds is reported, so drift on a shared machine hits all methods alike. Ratios are
"dense-numpy time / method time". Achieved bandwidth = bytes the method must read
(values + indices + row_ptr + x) + write (y), over the median time.

    python benchmarks/bench_sparse_cpu.py                 # default grid (~1-2 min)
    python benchmarks/bench_sparse_cpu.py --quick         # 4096x4096, 90%, batch 1
    python benchmarks/bench_sparse_cpu.py --json out.json
    # single-threaded comparison (BLAS threads must be pinned before numpy loads):
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 TES_NUM_THREADS=1 \
        python benchmarks/bench_sparse_cpu.py --threads 1
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from trt_edge.artifacts import atomic_write_json, machine_info, tool_versions
from trt_edge.sparse import cpu, formats
from trt_edge.sparse.select import SelectOptions, choose_format

DEFAULT_JSON = Path(__file__).parent / "results" / "sparse_cpu.json"


def pruned_matrix(rng: np.random.Generator, n: int, k: int, sparsity: float,
                  block: tuple[int, int]) -> np.ndarray:
    """A random matrix magnitude-pruned to ``sparsity`` in ``block`` units."""
    from trt_edge.compress.pruning import magnitude_mask
    w = rng.standard_normal((n, k)).astype(np.float32)
    return np.where(magnitude_mask(w, sparsity, block), w, 0).astype(np.float32)


def time_interleaved(methods: dict[str, Callable[[], Any]], rounds: int, warmup: int = 2
                     ) -> dict[str, dict[str, float]]:
    for _ in range(warmup):
        for fn in methods.values():
            fn()
    samples: dict[str, list[int]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            t0 = time.perf_counter_ns()
            fn()
            samples[name].append(time.perf_counter_ns() - t0)
    return {name: {"median_s": float(np.median(s)) * 1e-9, "p90_s": float(np.percentile(s, 90)) * 1e-9,
                   "min_s": float(np.min(s)) * 1e-9}
            for name, s in samples.items()}


def bench_case(rng: np.random.Generator, n: int, k: int, sparsity: float, structure: tuple[int, int],
               batch: int, rounds: int, threads: int) -> dict[str, Any]:
    import scipy.sparse as sp
    import torch

    w = pruned_matrix(rng, n, k, sparsity, structure)
    x = rng.standard_normal((batch, k)).astype(np.float32)
    wt = np.ascontiguousarray(w.T)
    y = np.empty((batch, n), np.float32)
    tw, tx = torch.from_numpy(w), torch.from_numpy(x)
    s_csr = sp.csr_matrix(w)
    xt = np.ascontiguousarray(x.T)
    csr = formats.to_csr(w)
    k_csr = cpu.PreparedSparseLinear(csr, num_threads=threads)
    methods: dict[str, Callable[[], Any]] = {
        "dense-numpy": lambda: np.matmul(x, wt, out=y),
        "dense-torch": lambda: torch.matmul(tx, tw.T),
        "scipy-csr": lambda: s_csr @ xt,
        "ours-csr": lambda: k_csr(x, y),
    }
    sizes = {"dense": w.nbytes, "ours-csr": csr.nbytes, "scipy-csr": csr.nbytes}
    choice = None
    if structure != (1, 1):
        choice = choose_format(w, SelectOptions(batch=batch, include_dense=False, repeats=5,
                                                num_threads=threads))
        if choice.format == "bsr":
            bsr = formats.to_bsr(w, choice.block)
            k_bsr = cpu.PreparedSparseLinear(bsr, num_threads=threads)
            methods[f"ours-{choice.label}"] = lambda: k_bsr(x, y)
            sizes[f"ours-{choice.label}"] = bsr.nbytes
    # correctness guard: a fast wrong kernel must not produce a figure
    ref = x @ w.T
    np.testing.assert_allclose(k_csr(x, y), ref, rtol=1e-4, atol=1e-3)
    times = time_interleaved(methods, rounds)
    io = (x.nbytes + batch * n * 4)
    base = times["dense-numpy"]["median_s"]
    rows = {}
    for name, t in times.items():
        weight_bytes = sizes.get(name, sizes["dense"])
        rows[name] = {**t, "speedup_vs_dense_numpy": base / t["median_s"],
                      "gb_per_s": (weight_bytes + io) / t["median_s"] / 1e9,
                      "weight_bytes": weight_bytes}
    return {"n": n, "k": k, "sparsity": sparsity, "structure": list(structure), "batch": batch,
            "threads": threads, "chosen_block_format": choice.label if choice else None,
            "methods": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--structures", nargs="+", default=["1x1", "1x4"],
                    help="pruning granularity: 1x1 = unstructured, RxC = blocks")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="0 = library/BLAS default")
    ap.add_argument("--quick", action="store_true", help="only 4096x4096, 90%%, batch 1")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.sparsity, args.batch = [4096], [0.9], [1]
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    results = []
    print(f"# trt_edge sparse CPU benchmark  ({cpu.build_info()}; pool threads "
          f"{cpu.default_threads()}; torch threads {torch.get_num_threads()})")
    header = f"{'size':>9} {'sparsity':>8} {'prune':>5} {'batch':>5}  {'method':<12} {'median':>10} " \
             f"{'min':>10} {'x dense':>8} {'GB/s':>7}"
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        for sparsity in args.sparsity:
            for structure in args.structures:
                block = tuple(int(v) for v in structure.split("x"))
                for batch in args.batch:
                    r = bench_case(rng, size, size, sparsity, block, batch, args.rounds, args.threads)
                    results.append(r)
                    for name, m in r["methods"].items():
                        print(f"{size:>4}x{size:<4} {sparsity:>8.0%} {structure:>5} {batch:>5}  {name:<12} "
                              f"{m['median_s'] * 1e3:>8.3f}ms {m['min_s'] * 1e3:>8.3f}ms "
                              f"{m['speedup_vs_dense_numpy']:>7.2f}x "
                              f"{m['gb_per_s']:>7.1f}")
                    sys.stdout.flush()
    payload = {"benchmark": "sparse_cpu", "date": dt.datetime.now(dt.timezone.utc).isoformat(),
               "command": " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:])),
               "machine": machine_info(), "versions": tool_versions(), "library": cpu.build_info(),
               "results": results}
    path = atomic_write_json(args.json, payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
