#!/usr/bin/env bash
# A separate venv for NVIDIA ModelOpt's ONNX PTQ (`nvidia-modelopt[onnx]`), used only by
# benchmarks/bench_int8.py as a peer. It pulls onnxruntime-gpu and its own onnx pins, which
# conflict with the project venv; ModelOpt's ONNX PTQ itself runs on the CPU here.
# Usage: bash scripts/setup_modelopt_venv.sh [PYTHON]   (creates .venv-modelopt/ at the repo root)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
VENV=.venv-modelopt
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet 'nvidia-modelopt[onnx]'
"$VENV/bin/python" -c "import modelopt.onnx.quantization as q; print('modelopt', q.__name__, 'ok')"
touch "$VENV/.installed"
