"""GPU benchmark of the CUDA SparseLinear kernels against dense cuBLAS and cuSPARSE (via torch).

For each (size, sparsity, batch) on one pruned matrix W [N, K] (FP32 by default):
  dense-cublas   torch.matmul(x, W.T)            (cuBLAS)
  torch-csr      torch.sparse.mm(W_csr, x.T)     (cuSPARSE SpMM)
  ours-csr       trt_edge CSR kernel             (ctypes, libtrt_edge_sparse_cuda.so)
  ours-bsrRxC    trt_edge BSR kernel, block shape chosen by measured GPU time
Timed with CUDA events around `--iters` back-to-back launches (after warm-up), median of
`--repeats` such groups, methods interleaved. The bandwidth floor of a method is the time
to move its bytes (weights + indices + x + y) at the device's copy bandwidth, measured
here with a large device-to-device copy (reported), and at `--peak-gbs` if given.

Goal (issue 5): at 90% sparsity, batch 1, 4096x4096: ours >= 4x faster than dense cuBLAS
and >= 60% of the bandwidth floor.

    python benchmarks/bench_sparse_gpu.py                       # full grid
    python benchmarks/bench_sparse_gpu.py --quick               # 4096, 90%, batch 1
    python benchmarks/bench_sparse_gpu.py --dtype fp16 --peak-gbs 3350

Needs an NVIDIA GPU, torch with CUDA, and nvcc (the kernel library is built on first use
by trt_edge.sparse.cuda.load_cuda_library).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from trt_edge.artifacts import atomic_write_json, machine_info, tool_versions
from trt_edge.sparse import formats

DEFAULT_JSON = Path(__file__).parent / "results" / "sparse_gpu.json"


def pruned(rng: np.random.Generator, n: int, k: int, sparsity: float, block: tuple[int, int]) -> np.ndarray:
    from trt_edge.compress.pruning import magnitude_mask
    w = rng.standard_normal((n, k)).astype(np.float32)
    return np.where(magnitude_mask(w, sparsity, block), w, 0).astype(np.float32)


class GpuTimer:
    """CUDA-event timing of `iters` launches; median over `repeats`."""

    def __init__(self, torch: Any, iters: int, repeats: int) -> None:
        self.torch, self.iters, self.repeats = torch, iters, repeats

    def __call__(self, fn: Callable[[], Any]) -> float:
        torch = self.torch
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(self.repeats):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(self.iters):
                fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / 1e3 / self.iters)
        return float(np.median(times))


def copy_bandwidth(torch: Any, timer: GpuTimer, nbytes: int = 1 << 30) -> float:
    """Bytes/s of a large device-to-device copy (read + write counted)."""
    a = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda")
    b = torch.empty_like(a)
    t = timer(lambda: b.copy_(a))
    return 2 * nbytes / t


def make_ours(torch: Any, lib: Any, weight: formats.SparseWeight, x: Any, y: Any) -> Callable[[], Any]:
    from trt_edge.sparse.cuda import check, launch
    dt_t = torch.float16 if weight.values.dtype == np.float16 else torch.float32
    arrays = {"rp": torch.from_numpy(weight.row_ptr).cuda(), "ci": torch.from_numpy(weight.col_idx).cuda(),
              "v": torch.from_numpy(np.ascontiguousarray(weight.values)).to(device="cuda", dtype=dt_t)}
    ptrs = {k: v.data_ptr() for k, v in arrays.items()}
    ptrs.update(b=None, x=x.data_ptr(), y=y.data_ptr())
    m = x.shape[0]

    def run() -> None:
        stream = torch.cuda.current_stream().cuda_stream
        launch(lib, weight, m, ptrs, stream)
    run.keep = arrays  # type: ignore[attr-defined]  # keep device arrays alive
    check(launch(lib, weight, m, ptrs, torch.cuda.current_stream().cuda_stream), "SparseLinear")
    return run


def bench_case(torch: Any, lib: Any, timer: GpuTimer, rng: np.random.Generator, n: int, k: int,
               sparsity: float, structure: tuple[int, int], batch: int, dtype: str,
               copy_bw: float, peak_gbs: float | None) -> dict[str, Any]:
    np_dt = np.float16 if dtype == "fp16" else np.float32
    t_dt = torch.float16 if dtype == "fp16" else torch.float32
    w = pruned(rng, n, k, sparsity, structure).astype(np_dt)
    x = torch.from_numpy(rng.standard_normal((batch, k)).astype(np_dt)).cuda()
    y = torch.empty((batch, n), dtype=t_dt, device="cuda")
    wd = torch.from_numpy(w).cuda()
    ref = (x.float() @ wd.float().T)
    methods: dict[str, Callable[[], Any]] = {"dense-cublas": lambda: torch.matmul(x, wd.T)}
    nbytes: dict[str, int] = {"dense-cublas": w.nbytes}
    try:
        w_csr_t = wd.to_sparse_csr()
        xt = x.T.contiguous()
        methods["torch-csr"] = lambda: torch.sparse.mm(w_csr_t, xt)
        nbytes["torch-csr"] = formats.to_csr(w).nbytes
    except (RuntimeError, NotImplementedError) as exc:  # e.g. FP16 CSR unsupported in this torch
        print(f"  torch-csr unavailable: {exc}")
    candidates = [formats.to_csr(w)] + [formats.to_bsr(w, b) for b in formats.BLOCK_SHAPES]
    best_bsr = None
    for cand in candidates:
        fn = make_ours(torch, lib, cand, x, y)
        tol = 2e-2 if dtype == "fp16" else 1e-3
        if not torch.allclose(y.float(), ref, rtol=tol, atol=tol * 10):
            raise SystemExit(f"ours-{cand.format}{cand.block} disagrees with cuBLAS: refusing to time it")
        if cand.format == "csr":
            methods["ours-csr"] = fn
            nbytes["ours-csr"] = cand.nbytes
        else:
            t = timer(fn)
            if best_bsr is None or t < best_bsr[0]:
                best_bsr = (t, cand, fn)
    if best_bsr is not None and best_bsr[1].stored <= 4 * max(1, best_bsr[1].nnz):
        label = f"ours-bsr{best_bsr[1].block[0]}x{best_bsr[1].block[1]}"
        methods[label] = best_bsr[2]
        nbytes[label] = best_bsr[1].nbytes
    io = x.element_size() * x.numel() + y.element_size() * y.numel()
    times = {name: timer(fn) for name, fn in methods.items()}
    base = times["dense-cublas"]
    rows = {}
    for name, t in times.items():
        moved = nbytes[name] + io
        floor_copy = moved / copy_bw
        rows[name] = {"median_s": t, "speedup_vs_cublas": base / t, "bytes": moved,
                      "achieved_gb_s": moved / t / 1e9, "floor_s_copy_bw": floor_copy,
                      "fraction_of_floor_copy_bw": floor_copy / t}
        if peak_gbs:
            rows[name]["fraction_of_floor_peak"] = moved / (peak_gbs * 1e9) / t
    return {"n": n, "k": k, "sparsity": sparsity, "structure": list(structure), "batch": batch,
            "dtype": dtype, "methods": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 8192])
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--structures", nargs="+", default=["1x1", "1x4"])
    ap.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--peak-gbs", type=float, default=None, help="nominal DRAM bandwidth, GB/s")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.sparsity, args.batch = [4096], [0.9], [1]
    import torch
    if not torch.cuda.is_available():
        print("No CUDA device visible to torch: this benchmark needs an NVIDIA GPU.", file=sys.stderr)
        return 2
    from trt_edge.sparse.cuda import load_cuda_library
    lib = load_cuda_library(build=True)
    timer = GpuTimer(torch, args.iters, args.repeats)
    copy_bw = copy_bandwidth(torch, timer)
    device = torch.cuda.get_device_name()
    print(f"# {device}: device-to-device copy bandwidth {copy_bw / 1e9:.0f} GB/s"
          + (f", nominal {args.peak_gbs:.0f} GB/s" if args.peak_gbs else ""))
    header = f"{'size':>9} {'sp':>4} {'prune':>5} {'batch':>5} {'method':<14} {'time':>10} {'x cuBLAS':>9} " \
             f"{'GB/s':>7} {'% floor':>8}"
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(args.seed)
    results = []
    for size in args.sizes:
        for sparsity in args.sparsity:
            for structure in args.structures:
                block = tuple(int(v) for v in structure.split("x"))
                for batch in args.batch:
                    r = bench_case(torch, lib, timer, rng, size, size, sparsity, block, batch, args.dtype,
                                   copy_bw, args.peak_gbs)
                    results.append(r)
                    for name, m in r["methods"].items():
                        print(f"{size:>4}x{size:<4} {sparsity:>4.0%} {structure:>5} {batch:>5} {name:<14} "
                              f"{m['median_s'] * 1e6:>8.1f}us {m['speedup_vs_cublas']:>8.2f}x "
                              f"{m['achieved_gb_s']:>7.0f} {100 * m['fraction_of_floor_copy_bw']:>7.0f}%")
                    sys.stdout.flush()
    payload = {"benchmark": "sparse_gpu", "date": dt.datetime.now(dt.timezone.utc).isoformat(),
               "command": " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:])),
               "device": device, "copy_bandwidth_gb_s": copy_bw / 1e9, "peak_gb_s": args.peak_gbs,
               "machine": machine_info(), "versions": tool_versions(), "results": results}
    print(f"wrote {atomic_write_json(args.json, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
