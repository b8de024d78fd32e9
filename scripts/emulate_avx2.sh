#!/usr/bin/env bash
# Run a command as on an x86-64 CPU with AVX2 but no AVX-512 and no VNNI (Haswell), on any x86-64
# Linux machine: ONNX Runtime (and NumPy, PyTorch) pick their kernels by CPUID, which qemu-user's
# CPU model answers, and trt_edge reads /proc/cpuinfo's flags (trt_edge/quant/cpu.py), which a
# filtered copy, bind-mounted in a private mount namespace, answers. This is how the u8s8
# saturation of ONNX Runtime's int8 kernels on such CPUs (issue 14) is reproduced here.
#
# Needs: qemu-user (Debian: apt-get install qemu-user), util-linux's unshare, and root or
# unprivileged user namespaces. Everything runs under emulation, ~30-100x slower than native:
# use it for the int8 checks, not the whole suite. The native calibration kernel is turned off
# (TRT_EDGE_CALIB_NATIVE=0: a build made with -march=native here may use AVX-512; the NumPy path
# gives the same histograms bit for bit).
#
#   scripts/emulate_avx2.sh .venv/bin/python -m pytest -q tests/quant/test_quant_qdq.py -k int8
set -euo pipefail
if [[ $# -eq 0 ]]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi
QEMU=$(command -v qemu-x86_64 || true)
if [[ -z "$QEMU" ]]; then
    echo "qemu-x86_64 not found: install qemu-user (Debian/Ubuntu: apt-get install qemu-user)" >&2
    exit 2
fi
if [[ "$(uname -m)" != "x86_64" ]]; then
    echo "this emulates an x86-64 CPU model on an x86-64 host; this machine is $(uname -m)" >&2
    exit 2
fi
CPUINFO=$(mktemp /tmp/trt_edge_cpuinfo_avx2.XXXXXX)
trap 'rm -f "$CPUINFO"' EXIT
# the flags Haswell lacks that our CPU-feature checks (and ORT's) care about
sed -E 's/ (avx512[a-z0-9_]*|avx_vnni[a-z0-9_]*|amx_[a-z0-9_]*|avx_ifma|vaes|vpclmulqdq|gfni)\b//g' /proc/cpuinfo > "$CPUINFO"
NS=(unshare -m)
[[ $EUID -eq 0 ]] || NS=(unshare -rm)
export TRT_EDGE_CALIB_NATIVE=0
"${NS[@]}" bash -c 'mount --bind "$1" /proc/cpuinfo && shift && exec "$0" -cpu Haswell-noTSX "$@" \
    2> >(grep -v "TCG doesn.t support requested feature" >&2)' "$QEMU" "$CPUINFO" "$@"
