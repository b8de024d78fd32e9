"""Which integer scheme ONNX Runtime's CPU kernels run without saturating on this machine.

ONNX Runtime's x86 u8s8 kernels (uint8 activations x int8 weights) use ``VPMADDUBSW`` on CPUs
without VNNI, which adds two u8 x s8 products into a saturating int16: large activations times
large weights are clamped (ONNX Runtime's quantization documentation; the reason its
``quantize_static`` offers ``reduce_range``). With VNNI (AVX512-VNNI, AVX-VNNI, AMX) the products
accumulate in int32 (``VPDPBUSD``) and nothing saturates. The u8u8 kernels widen to int16 before
multiplying (``VPMADDWD``) and never saturate either.

So the ``onnxruntime`` Q/DQ placement stores weights as
- ``u8s8`` (int8 weights, zero point 0) where it cannot saturate: x86 with VNNI, and non-x86 CPUs;
- ``u8u8`` (uint8 weights, zero point 128: *the same symmetric grid*, q_u8 = q_s8 + 128, so no
  precision is lost, unlike reduce-range's 7-bit weights) on x86 without VNNI.
"""
from __future__ import annotations

import functools
import platform
from pathlib import Path

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
ORT_SCHEMES = ("auto", "u8s8", "u8u8")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def is_x86(machine: str | None = None) -> bool:
    return (machine or platform.machine()).lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def has_vnni(flags: frozenset[str] | set[str] | None = None) -> bool:
    return any(f in (cpu_flags() if flags is None else flags) for f in VNNI_FLAGS)


def ort_int8_scheme(requested: str = "auto", *, flags: frozenset[str] | set[str] | None = None,
                    machine: str | None = None) -> tuple[str, str]:
    """``(scheme, reason)`` for the ``onnxruntime`` placement: "u8s8" or "u8u8" (see module doc)."""
    if requested not in ORT_SCHEMES:
        raise ValueError(f"ORT int8 scheme must be one of {ORT_SCHEMES}, got {requested!r}")
    if requested != "auto":
        return requested, "requested"
    if not is_x86(machine):
        return "u8s8", f"{machine or platform.machine()}: ONNX Runtime's int8 kernels do not saturate here"
    f = cpu_flags() if flags is None else flags
    vnni = [x for x in VNNI_FLAGS if x in f]
    if vnni:
        return "u8s8", f"this CPU has {vnni[0]}: u8s8 accumulates in int32 (no saturation)"
    return "u8u8", ("this x86 CPU has no VNNI: u8s8 kernels saturate int16 pair sums (VPMADDUBSW), so weights "
                    "are stored as uint8 with zero point 128 (the same symmetric grid, u8u8 kernels)")


__all__ = ["cpu_flags", "has_vnni", "is_x86", "ort_int8_scheme", "VNNI_FLAGS", "ORT_SCHEMES"]
