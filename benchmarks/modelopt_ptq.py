"""NVIDIA ModelOpt ONNX PTQ (INT8, entropy calibration) as a peer for bench_int8.py.

Runs in its own venv (``bash scripts/setup_modelopt_venv.sh``: ModelOpt pins its own onnx and
onnxruntime-gpu), on the CPU execution provider:

    .venv-modelopt/bin/python benchmarks/modelopt_ptq.py MODEL.onnx CALIB.npz OUT.onnx [--method entropy]

Prints one line ``RESULT {"seconds": ...}``. The rest of the graph stays FP32
(``high_precision_dtype="fp32"``), as in our INT8 models, so the comparison is INT8 placement and
ranges only.
"""
from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("onnx")
    p.add_argument("calib")
    p.add_argument("out")
    p.add_argument("--method", default="entropy", choices=("entropy", "max"))
    args = p.parse_args()
    data = np.load(args.calib)
    calib = {k: data[k] for k in data.files}
    t0 = time.perf_counter()
    from modelopt.onnx.quantization import quantize
    quantize(args.onnx, quantize_mode="int8", calibration_data=calib, calibration_method=args.method,
             calibration_eps=["cpu"], high_precision_dtype="fp32", output_path=args.out, log_level="ERROR")
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
    return 0


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    raise SystemExit(main())
