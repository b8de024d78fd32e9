"""ONNX Runtime's int8 kernels on an AVX2-only CPU without VNNI, emulated (scripts/emulate_avx2.sh).

The u8s8 scheme (uint8 activations x int8 weights) saturates in ONNX Runtime's x86 kernels on
such CPUs (VPMADDUBSW's int16 pair sums); the u8u8 scheme our ``ort_scheme="auto"`` picks there
does not. qemu-user's Haswell CPU model makes ONNX Runtime take exactly that kernel path here
(its CPUID answers "AVX2, no AVX-512, no VNNI"), so the saturation is reproduced, not assumed.
Opt-in (``--run-slow``): emulation is ~50x slower (this test: ~4 minutes) and needs qemu-user.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from trt_edge.quant import CalibrationOptions, QuantizeOptions, calibrate, quantize_qdq

ROOT = Path(__file__).resolve().parents[2]
EMULATE = ROOT / "scripts" / "emulate_avx2.sh"

# What runs under the emulator: the CPU features ORT sees, the scheme trt_edge picks, and the
# accuracy of each model with ORT's full optimizations (its int8 kernels), as JSON.
_CHILD = r"""
import json, sys
import numpy as np, onnxruntime as ort
from numpy._core._multiarray_umath import __cpu_features__ as f
from trt_edge.quant.cpu import ort_int8_scheme
d = np.load(sys.argv[1]); x, y = d["x"], d["y"]
out = {"avx512f": bool(f["AVX512F"]), "vnni": bool(f["AVX512VNNI"]), "avx2": bool(f["AVX2"]),
       "scheme": ort_int8_scheme()[0], "accuracy": {}}
for path in sys.argv[2:]:
    so = ort.SessionOptions(); so.log_severity_level = 3; so.intra_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    logits = np.concatenate([s.run(None, {"input": x[i:i + 250]})[0] for i in range(0, len(x), 250)])
    out["accuracy"][path] = float(np.mean(logits.argmax(1) == y))
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_u8s8_saturates_without_vnni_and_u8u8_does_not(mnist_onnx, mnist_split, tmp_path):
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        pytest.skip("emulates an x86-64 CPU model on an x86-64 Linux host")
    if shutil.which("qemu-x86_64") is None:
        pytest.skip("needs qemu-user (apt-get install qemu-user) to emulate an AVX2-only CPU")
    model = onnx.load(mnist_onnx)
    ranges = calibrate(model, {"input": mnist_split.x_train[:512]}, CalibrationOptions(show_progress=False,
                                                                                        target="onnxruntime"))
    paths = {"fp32": str(mnist_onnx)}
    for scheme in ("u8s8", "u8u8"):
        p = tmp_path / f"mnist_{scheme}.onnx"
        onnx.save(quantize_qdq(model, ranges, QuantizeOptions(target="onnxruntime", ort_scheme=scheme)), p)
        paths[scheme] = str(p)
    data = tmp_path / "eval.npz"
    np.savez(data, x=mnist_split.x_test, y=mnist_split.y_test)
    child = tmp_path / "child.py"
    child.write_text(_CHILD)
    proc = subprocess.run([str(EMULATE), sys.executable, str(child), str(data), *paths.values()],
                          capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if proc.returncode != 0 and "unshare" in proc.stderr:
        pytest.skip(f"cannot make a private mount namespace here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    assert res["avx2"] and not res["avx512f"] and not res["vnni"], res  # the CPU ORT saw
    assert res["scheme"] == "u8u8", res  # what trt_edge picks there
    acc = {k: res["accuracy"][p] for k, p in paths.items()}
    print(f"emulated AVX2-only CPU, ORT int8 kernels, 1,000 MNIST digits: {acc}")
    # 1,000 digits: u8u8 within 3 digits of FP32; u8s8 loses more than 5 (measured: 0.951 / 0.935)
    assert acc["u8u8"] >= acc["fp32"] - 0.003, acc
    assert acc["u8s8"] < acc["fp32"] - 0.005, acc
