"""Signing and verification time against model size, next to the time to load the model.

For each size (default 100 MB and 1 GB of weights) the script writes an ONNX model whose weights
are one MatMul initializer (external data for the 1 GB case), publishes it as a signed version,
and times, interleaved over ``--repeats`` rounds:

- ``sign``: OMS signing of the version directory (hashing every file + one EC signature);
- ``verify``: full verification (hash every file, check the signature) as done before a load;
- ``read``: reading the artifact bytes (what any loader does first; page cache warm);
- ``load``: creating an ONNX Runtime session from the file (the CPU stand-in for deserializing an
  engine on a Jetson).

Prints a table and writes benchmarks/results/registry.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trt_edge.registry.signing import generate_keypair, sign_model, verify_model  # noqa: E402


def make_model(path: Path, megabytes: int) -> None:
    n = int((megabytes * 1e6 / 4) ** 0.5)
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    external = megabytes >= 1000
    onnx.save(m, path, save_as_external_data=external, location=path.name + ".data" if external else None)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-mb", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "registry.json"))
    args = ap.parse_args()
    import onnxruntime as ort

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        tmpd = Path(tmp)
        keys = generate_keypair(tmpd / "k.pem", tmpd / "k.pub")
        for mb in args.sizes_mb:
            d = tmpd / f"m{mb}" / "1"
            d.mkdir(parents=True)
            make_model(d / "model.onnx", mb)
            total = sum(f.stat().st_size for f in d.iterdir())
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            t = {"sign": [], "verify": [], "read": [], "load": []}
            for _ in range(args.repeats):
                (d / "model.sig").unlink(missing_ok=True)
                t["sign"].append(timed(lambda: sign_model(d, private_key=keys.private_key)))
                t["verify"].append(timed(lambda: verify_model(d, public_key=keys.public_key)))
                t["read"].append(timed(lambda: [f.read_bytes() for f in d.iterdir()]))
                t["load"].append(timed(lambda: ort.InferenceSession(str(d / "model.onnx"), so,
                                                                    providers=["CPUExecutionProvider"])))
            med = {k: statistics.median(v) for k, v in t.items()}
            rows.append({"size_mb": round(total / 1e6, 1), **{f"{k}_s": round(v, 4) for k, v in med.items()},
                         "verify_GBps": round(total / 1e9 / med["verify"], 2),
                         "verify_over_load": round(med["verify"] / med["load"], 3)})
            shutil.rmtree(d.parent)
    print(f"{'size MB':>8} {'sign s':>8} {'verify s':>9} {'read s':>8} {'ORT load s':>10} {'verify GB/s':>11} "
          f"{'verify/load':>11}")
    for r in rows:
        print(f"{r['size_mb']:>8} {r['sign_s']:>8.3f} {r['verify_s']:>9.3f} {r['read_s']:>8.3f} {r['load_s']:>10.3f} "
              f"{r['verify_GBps']:>11.2f} {r['verify_over_load']:>11.2f}")
    out = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "load_avg": os.getloadavg()}, "repeats": args.repeats, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
