"""Engine metadata sidecars and the compatibility check done before deserializing.

A TensorRT plan only loads on the TensorRT version and GPU it was built for
(unless built version- or hardware-compatible), and TensorRT's own refusal is a
cryptic deserialization error. Every engine we build gets ``NAME.plan.json``;
:func:`check_engine_compatible` reads it and refuses with a message that says
what to do, before TensorRT is asked.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping

from ..artifacts import read_sidecar, sidecar_path, write_sidecar
from ..errors import ArtifactError, EngineCompatibilityError
from .versions import TrtVersion, parse_version

log = logging.getLogger(__name__)

ENGINE_KIND = "tensorrt-engine"


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    """The GPU an engine is built for / run on."""

    name: str
    compute_capability: tuple[int, int]
    integrated: bool = False  # Jetson: the GPU shares the CPU's memory

    @property
    def sm(self) -> str:
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "compute_capability": list(self.compute_capability),
                "integrated": self.integrated}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "GpuInfo":
        cc = d.get("compute_capability") or (0, 0)
        return cls(str(d.get("name", "unknown")), (int(cc[0]), int(cc[1])), bool(d.get("integrated", False)))


def query_gpu(device: int = 0) -> GpuInfo | None:
    """The GPU on this machine via pycuda, else ``nvidia-smi``; None without one."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        dev = cuda.Device(device)
        attrs = dev.get_attributes()
        integrated = bool(attrs.get(cuda.device_attribute.INTEGRATED, 0))
        return GpuInfo(dev.name(), tuple(dev.compute_capability()), integrated)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - no pycuda, no driver, no device
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
            line = out.strip().splitlines()[device]
            name, cc = (s.strip() for s in line.rsplit(",", 1))
            major, minor = cc.split(".")
            return GpuInfo(name, (int(major), int(minor)))
        except Exception:  # noqa: BLE001
            return None
    return None


@dataclasses.dataclass
class EngineMetadata:
    """What an engine needs to be loaded again (stored in its sidecar)."""

    tensorrt_version: str
    gpu: GpuInfo | None
    precision: str
    strongly_typed: bool
    profiles: list[dict[str, Any]]
    source_onnx_sha256: str
    calibration_sha256: str | None = None
    plugins: list[str] = dataclasses.field(default_factory=list)
    plugins_serialized: bool = False
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    hardware_compatibility: str | None = None
    dla_core: int | None = None
    build_time_s: float = 0.0
    io: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["gpu"] = self.gpu.to_json() if self.gpu else None
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "EngineMetadata":
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in fields}
        kw["gpu"] = GpuInfo.from_json(d["gpu"]) if d.get("gpu") else None
        return cls(**kw)


def write_engine_metadata(plan_path: str | os.PathLike[str], meta: EngineMetadata, *,
                          onnx_path: str | os.PathLike[str] | None = None,
                          options: Any = None, build_log: str | None = None) -> Path:
    """Write ``<plan>.json``: the standard sidecar plus an ``engine`` section."""
    sources: dict[str, str | os.PathLike[str]] = {}
    if onnx_path is not None:
        sources["onnx"] = onnx_path
    engine = meta.to_json()
    # A duration differs between identical builds: it goes to the unhashed provenance.
    timing = {"build_time_s": engine.pop("build_time_s", 0.0)}
    extra: dict[str, Any] = {"engine": engine}
    if build_log is not None:
        extra["build_log"] = build_log
    return write_sidecar(plan_path, ENGINE_KIND, sources=sources, options=options, extra=extra,
                         provenance=timing)


def read_engine_metadata(plan_path: str | os.PathLike[str]) -> EngineMetadata:
    """The engine section of ``<plan>.json`` (the plan must match the sidecar's sha256)."""
    side = read_sidecar(plan_path)
    if side.get("kind") != ENGINE_KIND or "engine" not in side:
        raise ArtifactError(f"'{sidecar_path(plan_path)}' is not a TensorRT engine sidecar "
                            f"(kind={side.get('kind')!r}). Rebuild with `trt-edge build`.")
    engine = dict(side["engine"])
    prov = side.get("provenance") or {}
    if "build_time_s" not in engine and isinstance(prov, dict) and "build_time_s" in prov:
        engine["build_time_s"] = prov["build_time_s"]
    return EngineMetadata.from_json(engine)


def check_engine_compatible(meta: EngineMetadata, runtime_version: TrtVersion,
                            gpu: GpuInfo | None, *, lean: bool = False) -> list[str]:
    """Refuse an engine this TensorRT/GPU cannot load; return warnings for soft mismatches.

    Rules (NVIDIA "Version Compatibility" / "Hardware Compatibility"):
    - without VERSION_COMPATIBLE the runtime's major.minor.patch must equal the builder's;
    - a version-compatible engine runs on the same or a later runtime within the same
      major version, and TensorRT 10 version-compatible engines also on TensorRT 11;
    - the lean runtime only runs version-compatible engines;
    - without hardware compatibility the compute capability must match (a different
      GPU model of the same capability loads, with a warning: tactics were timed elsewhere);
      "ampere_plus" engines run on compute capability 8.0 or newer.
    """
    warnings: list[str] = []
    built = parse_version(meta.tensorrt_version)
    same = (built.major, built.minor, built.patch) == (runtime_version.major, runtime_version.minor,
                                                       runtime_version.patch)
    if lean and not meta.version_compatible:
        raise EngineCompatibilityError(
            "The lean runtime only runs version-compatible engines; this one was built without "
            "--version-compatible. Rebuild it with `trt-edge build --version-compatible`, or use "
            "the full tensorrt runtime.")
    if meta.version_compatible:
        later_ok = (runtime_version >= built and (runtime_version.major == built.major
                                                  or (built.major, runtime_version.major) == (10, 11)))
        if not later_ok:
            raise EngineCompatibilityError(
                f"Engine was built version-compatible with TensorRT {built}; TensorRT "
                f"{runtime_version} cannot run it (needs the same or a later version of the same "
                "major, or 10 -> 11). Rebuild it here with `trt-edge build`.")
    elif not same:
        raise EngineCompatibilityError(
            f"Engine was built with TensorRT {built} but this runtime is TensorRT {runtime_version}: "
            "TensorRT engines only load on the version that built them. Rebuild it here with "
            "`trt-edge build MODEL.onnx -o ENGINE.plan`, or build with --version-compatible.")
    if meta.gpu is not None:
        if gpu is None:
            warnings.append("no GPU information here: compute-capability check skipped")
        elif meta.hardware_compatibility == "ampere_plus":
            if gpu.compute_capability < (8, 0):
                raise EngineCompatibilityError(
                    f"Engine is hardware-compatible for Ampere and newer, but this GPU ({gpu.name}, "
                    f"{gpu.sm}) is older. Rebuild it on this machine.")
        elif gpu.compute_capability != meta.gpu.compute_capability:
            raise EngineCompatibilityError(
                f"Engine was built for {meta.gpu.name} ({meta.gpu.sm}) but this GPU is {gpu.name} "
                f"({gpu.sm}): engines are specific to the GPU architecture. Rebuild it on this "
                "machine, or build with --hardware-compatibility ampere_plus.")
        elif gpu.name != meta.gpu.name:
            warnings.append(f"engine was built on {meta.gpu.name}, running on {gpu.name} (same "
                            f"{gpu.sm}): it loads, but its tactics were timed on the other GPU")
    for w in warnings:
        log.warning("%s", w)
    return warnings
