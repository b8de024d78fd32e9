"""TensorRT calibration caches (``IInt8EntropyCalibrator2`` format) from our ranges.

Format (TensorRT 8/10, text): a header line ``TRT-<version>-EntropyCalibration2``
then one line per tensor ``<name>: <8 hex digits>``, the hex being the big-endian
IEEE-754 float32 bit pattern of the tensor's *scale* (amax / 127).
``<version>`` is TensorRT's ``NV_TENSORRT_VERSION`` integer: major*10000 +
minor*100 + patch from TensorRT 10 (10.3.0 -> 100300), major*1000 + minor*100 +
patch before (8.6.1 -> 8601). TensorRT reuses a cache only when this header
matches its own version and algorithm, so write the cache for the version that
will build the engine.

TensorRT itself cannot tell which model a cache belongs to: the sidecar
``<cache>.json`` records the model hash and calibration settings, and
:func:`load_trt_cache` refuses a cache made for another model.
"""
from __future__ import annotations

import os
import re
import struct
from pathlib import Path

from ..artifacts import atomic_write_text, read_sidecar, write_sidecar
from ..errors import ArtifactError, InvalidInputError
from .ranges import CalibrationResult

ALGORITHM = "EntropyCalibration2"
DEFAULT_TRT_VERSION = "10.3.0"  # JetPack 6 (Jetson Orin): the main legacy-path user
_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")


def trt_version_code(version: str | int) -> int:
    """``"10.3.0"`` -> 100300, ``"8.6.1"`` -> 8601 (NV_TENSORRT_VERSION); ints pass through."""
    if isinstance(version, int):
        return version
    parts = [int(p) for p in re.findall(r"\d+", str(version))[:3]]
    if not parts:
        raise InvalidInputError(f"Cannot parse TensorRT version {version!r}; write it like 10.3.0.")
    major, minor, patch = (parts + [0, 0])[:3]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def float_to_hex(value: float) -> str:
    return struct.pack(">f", float(value)).hex()


def hex_to_float(text: str) -> float:
    return float(struct.unpack(">f", bytes.fromhex(text))[0])


def render_trt_cache(result: CalibrationResult, trt_version: str | int = DEFAULT_TRT_VERSION) -> bytes:
    """The cache bytes TensorRT would read (what the legacy calibrator adapter returns)."""
    lines = [f"TRT-{trt_version_code(trt_version)}-{ALGORITHM}"]
    for name, rng in sorted(result.ranges.items()):
        if ":" in name or "\n" in name:
            raise InvalidInputError(f"Tensor name {name!r} cannot be written to a TensorRT cache "
                                    "(contains ':' or a newline); rename it in the ONNX graph.")
        lines.append(f"{name}: {float_to_hex(rng.scale)}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def write_trt_cache(result: CalibrationResult, path: str | os.PathLike[str],
                    trt_version: str | int = DEFAULT_TRT_VERSION) -> Path:
    """Write ``path`` atomically plus a sidecar with the model hash and settings."""
    out = atomic_write_text(path, render_trt_cache(result, trt_version).decode("utf-8"))
    write_sidecar(out, "trt-calibration-cache", sources={"model": f"sha256:{result.model_hash}"},
                  options=result.settings,
                  extra={"model_sha256": result.model_hash, "trt_version_code": trt_version_code(trt_version),
                         "algorithm": ALGORITHM, "num_tensors": len(result.ranges)})
    return out


def parse_trt_cache(text: str, source: str = "cache") -> tuple[int, str, dict[str, float]]:
    """Parse cache text into ``(version_code, algorithm, {tensor: scale})``."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ArtifactError(f"TensorRT cache '{source}' is empty. Recalibrate.")
    m = _HEADER.match(lines[0])
    if not m:
        raise ArtifactError(f"'{source}' does not start with a TensorRT cache header "
                            f"(TRT-<version>-<algorithm>), got {lines[0][:60]!r}.")
    scales: dict[str, float] = {}
    for ln in lines[1:]:
        name, sep, hexval = ln.rpartition(": ")
        if not sep or not re.fullmatch(r"[0-9a-fA-F]{8}", hexval):
            raise ArtifactError(f"Bad line in TensorRT cache '{source}': {ln[:80]!r}.")
        scales[name] = hex_to_float(hexval)
    return int(m.group(1)), m.group(2), scales


def read_trt_cache(path: str | os.PathLike[str]) -> dict[str, float]:
    """``{tensor: scale}`` from a TensorRT calibration cache (any TensorRT version)."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"TensorRT cache '{p}' does not exist. Create it with "
                            "`trt-edge calibrate ... --trt-cache PATH`.")
    return parse_trt_cache(p.read_text(encoding="utf-8", errors="replace"), str(p))[2]


def load_trt_cache(path: str | os.PathLike[str], expected_model_hash: str | None = None,
                   trt_version: str | int | None = None) -> bytes:
    """The cache bytes, after checking its sidecar's model hash and its header version.

    A cache with no sidecar cannot be checked: it is refused when a hash is
    expected (it may belong to any model).
    """
    p = Path(path)
    data = p.read_bytes() if p.exists() else b""
    if not data:
        raise ArtifactError(f"TensorRT cache '{p}' is missing or empty.")
    version, algo, _ = parse_trt_cache(data.decode("utf-8", errors="replace"), str(p))
    if algo != ALGORITHM:
        raise ArtifactError(f"'{p}' was made by {algo}, not {ALGORITHM}; recalibrate.")
    if trt_version is not None and version != trt_version_code(trt_version):
        raise ArtifactError(f"'{p}' is for TensorRT version code {version} but this TensorRT is "
                            f"{trt_version_code(trt_version)}; TensorRT would ignore it. Rewrite it with "
                            f"`trt-edge calibrate --trt-cache ... --trt-version {trt_version}` (no "
                            "recalibration needed when you still have the ranges file).")
    if expected_model_hash is not None:
        try:
            side = read_sidecar(p)
        except ArtifactError as exc:
            raise ArtifactError(f"Cannot verify TensorRT cache '{p}': {exc} Recreate it with trt-edge so "
                                "it carries the model hash.") from exc
        if side.get("model_sha256") != expected_model_hash:
            raise ArtifactError(
                f"Stale TensorRT cache '{p}': it was calibrated for model sha256 "
                f"{str(side.get('model_sha256'))[:12]}..., the model being built is "
                f"{expected_model_hash[:12]}.... Recalibrate (trt-edge calibrate) for this model.")
    return data
