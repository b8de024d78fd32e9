"""A Triton-layout model repository: ``DIR/NAME/config.pbtxt`` + ``DIR/NAME/VERSION/model.onnx|plan``.

:class:`ModelRepository` scans the folder, loads the versions each model's ``version_policy``
selects (with ``instance_group`` count execution instances each), and loads/unloads models on
request (Triton's model-repository extension). Loading builds everything first and swaps it in
only when every selected version loaded; a failed load leaves what was serving untouched.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ArtifactError, InvalidInputError, TrtEdgeError
from ..numerics import nonfinite_output
from . import backend
from .batcher import ExecutionHook, VersionStats, make_scheduler
from .config import (BACKEND_OF_PLATFORM, PLATFORM_ONNX, PLATFORM_PLAN, ModelConfig, autocomplete,
                     parse_config)

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


class ModelNotFound(TrtEdgeError):
    """Unknown model or version (HTTP 404)."""


@dataclasses.dataclass
class ServedVersion:
    name: str
    version: str
    config: ModelConfig
    model: backend.LoadedModel
    scheduler: Any
    stats: VersionStats
    path: Path
    drift: Any = None                     # a registry DriftMonitor when the version has a reference
    verified: bool = False                # its OMS signature verified before it was loaded


@dataclasses.dataclass
class ModelEntry:
    name: str
    state: str = "UNAVAILABLE"            # READY | UNAVAILABLE | LOADING
    reason: str = ""
    versions: dict[str, ServedVersion] = dataclasses.field(default_factory=dict)

    def latest(self) -> ServedVersion | None:
        if not self.versions:
            return None
        return self.versions[max(self.versions, key=int)]


def _zeros_feed(model: backend.LoadedModel) -> dict[str, np.ndarray] | None:
    feed = {}
    for t in model.signature.inputs:
        dt = np.dtype(t.dtype)
        if dt == np.dtype(object):
            return None  # BYTES inputs: no meaningful zero input; the first request checks the model
        feed[t.name] = np.zeros(tuple(d if d >= 0 else 1 for d in t.shape), dtype=dt)
    return feed


def _smoke_failure(model: backend.LoadedModel, feed: dict[str, np.ndarray]) -> str | None:
    try:
        out = model.infer(feed).outputs
    except Exception as exc:  # noqa: BLE001 - any backend failure
        return f"failed on zeros: {str(exc).splitlines()[0][:300]}"
    bad = nonfinite_output(out)
    return None if bad is None else f"gave non-finite values in output '{bad}' on zeros"


def _smoke_inference(model: backend.LoadedModel, name: str, version: int,
                     serving: backend.LoadedModel | None) -> None:
    """One inference on zeros (dynamic dims 1) before a version serves.

    Differential: a version is refused when it fails (or gives NaN/inf) on a feed the version
    serving now handles. When nothing serves yet, or the serving version fails on it too, the
    generated feed is what does not suit the model (silero-vad rejects 1-sample frames): warn only.
    """
    feed = _zeros_feed(model)
    if feed is None:
        return
    problem = _smoke_failure(model, feed)
    if problem is None:
        return
    if serving is not None and _smoke_failure(serving, feed) is None:
        raise ArtifactError(f"model '{name}' version {version} {problem}, where the version serving now does "
                            "not; not serving it.")
    log.warning("model '%s' version %s: smoke inference %s (the generated feed may not suit this model); "
                "loading it anyway", name, version, problem)


def _platform_for(path: Path) -> str:
    return PLATFORM_PLAN if path.suffix == ".plan" else PLATFORM_ONNX


class ModelRepository:
    """The models served from one repository folder."""

    def __init__(self, root: str | os.PathLike[str], *,
                 execution_hook: Callable[[str, str], ExecutionHook] | None = None,
                 trust: Any = None, encryption_key: bytes | None = None,
                 drift_gauge: Callable[[str, str], Callable[[float], None]] | None = None,
                 drift_threshold: float = 0.25, smoke_test: bool = True) -> None:
        """``trust``: a :class:`trt_edge.registry.TrustPolicy`; every version is verified (OMS)
        before its bytes are parsed, and under ``require_signed`` an unsigned one is refused.
        ``encryption_key``: decrypts ``model.onnx.enc``/``model.plan.enc`` in memory.
        ``smoke_test``: run one inference on zeros before a version serves (a version that
        fails it, or gives non-finite outputs, is not loaded)."""
        self.root = Path(root)
        self._trust = trust
        self._key = encryption_key
        self._drift_gauge = drift_gauge
        self._drift_threshold = drift_threshold
        self._smoke = smoke_test
        if not self.root.is_dir():
            raise InvalidInputError(f"Model repository '{self.root}' is not a folder. Give the folder that "
                                    "holds NAME/config.pbtxt and NAME/VERSION/model.onnx (Triton's layout); "
                                    "`trt-edge export-triton` writes one.")
        self._models: dict[str, ModelEntry] = {}
        self._lock = asyncio.Lock()
        self._execution_hook = execution_hook

    # ---- discovery -------------------------------------------------------------------------------
    def names_on_disk(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and _NAME.match(p.name))

    def _read_config(self, name: str) -> ModelConfig:
        path = self.root / name / "config.pbtxt"
        if not path.exists():
            return ModelConfig()
        return parse_config(path.read_text(encoding="utf-8"), source=str(path))

    def _versions_on_disk(self, name: str) -> list[int]:
        return sorted(int(p.name) for p in (self.root / name).iterdir() if p.is_dir() and p.name.isdigit())

    def registry_active(self, name: str) -> int | None:
        """The version ``trt-edge registry`` promoted (``NAME/registry.json``), if any."""
        from ..registry.store import STATE_NAME  # noqa: PLC0415
        path = self.root / name / STATE_NAME
        if not path.is_file():
            return None
        try:
            active = json.loads(path.read_text()).get("active")
        except (OSError, ValueError, AttributeError):
            log.warning("model '%s': unreadable %s ignored", name, path)
            return None
        return int(active) if isinstance(active, int) else None

    def fingerprint(self, name: str) -> tuple:
        """What a repository poll compares: version folders, config and registry state."""
        d = self.root / name
        if not d.is_dir():
            return ()
        stamp = []
        for p in sorted(d.iterdir()):
            if p.name == "config.pbtxt" or p.name == "registry.json" or (p.is_dir() and p.name.isdigit()):
                try:
                    st = p.stat()
                except OSError:
                    continue
                stamp.append((p.name, st.st_mtime_ns, st.st_size))
        return tuple(stamp)

    def _artifact(self, name: str, version: int, cfg: ModelConfig) -> Path:
        folder = self.root / name / str(version)
        candidates = [cfg.default_model_filename] if cfg.default_model_filename else []
        if cfg.platform == PLATFORM_PLAN:
            candidates.append("model.plan")
        elif cfg.platform == PLATFORM_ONNX:
            candidates.append("model.onnx")
        else:
            candidates += ["model.onnx", "model.plan"]
        for c in candidates:
            if (folder / c).is_file():
                return folder / c
            if (folder / (c + ".enc")).is_file():  # stored encrypted (trt-edge registry publish --encryption-key)
                return folder / (c + ".enc")
        raise ArtifactError(f"model '{name}' version {version}: no {' or '.join(candidates)} in '{folder}'. "
                            "Put the model file there (Triton's layout) or set default_model_filename.")

    # ---- load / unload ---------------------------------------------------------------------------
    def _load_sync(self, name: str, instances_override: int | None) -> tuple[ModelConfig, list[ServedVersion]]:
        if not _NAME.match(name) or not (self.root / name).is_dir():
            raise ModelNotFound(f"failed to load '{name}', failed to poll from model repository: no model "
                                f"folder '{name}' in '{self.root}'.")
        raw = self._read_config(name)
        on_disk = self._versions_on_disk(name)
        chosen = raw.version_policy.select(on_disk)
        active = self.registry_active(name)
        if active is not None and raw.version_policy.kind == "latest" and active in on_disk:
            chosen = [active]  # the registry's promoted version (promote / rollback) serves
        if not chosen:
            raise ArtifactError(f"model '{name}': no version folder to load (found {on_disk or 'none'} under "
                                f"'{self.root / name}', version_policy {raw.version_policy.kind}). Add "
                                f"'{name}/1/model.onnx'.")
        loaded: list[ServedVersion] = []
        final: ModelConfig | None = None
        try:
            for v in chosen:
                artifact = self._artifact(name, v, raw)
                platform = _platform_for(artifact.with_suffix("") if artifact.suffix == ".enc" else artifact)
                count = instances_override or raw.instance_count
                source, verified = self._verified_source(name, v, artifact)
                model = backend.load(source, name=name, version=str(v), instances=count,
                                     backend=BACKEND_OF_PLATFORM[platform])
                try:
                    cfg = autocomplete(raw, model.signature, name=name, platform=platform)
                    if self._smoke:
                        _smoke_inference(model, name, v, self._serving_model(name))
                except Exception:
                    model.close(wait=False)
                    raise
                if final is not None and (cfg.input != final.input or cfg.output != final.output):
                    log.warning("model '%s': version %s has other inputs/outputs than version %s; each "
                                "version is checked against its own signature.", name, v, loaded[0].version)
                final = final or cfg
                stats = VersionStats()
                hook = self._execution_hook(name, str(v)) if self._execution_hook else None
                sched = make_scheduler(model, stats, max_batch_size=int(cfg.max_batch_size or 0),
                                       dynamic_batching=cfg.dynamic_batching, on_execution=hook)
                loaded.append(ServedVersion(name, str(v), cfg, model, sched, stats, artifact,
                                            drift=self._drift_monitor(name, str(v), artifact.parent),
                                            verified=verified))
        except Exception:
            for sv in loaded:
                sv.model.close(wait=False)
            raise
        assert final is not None
        return final, loaded

    def _serving_model(self, name: str) -> backend.LoadedModel | None:
        entry = self._models.get(name)
        if entry is None or not entry.versions:
            return None
        latest = entry.latest()
        return latest.model if latest is not None else None

    def _verified_source(self, name: str, version: int, artifact: Path) -> tuple[Any, bool]:
        """The artifact to load: its path, or its verified (and decrypted) bytes."""
        encrypted = artifact.suffix == ".enc"
        if self._trust is None and not encrypted:
            return artifact, False
        from ..registry.loading import open_verified  # noqa: PLC0415
        from ..registry.policy import TrustPolicy  # noqa: PLC0415
        try:
            art = open_verified(artifact.parent, self._trust or TrustPolicy(), artifact=artifact.name,
                                key=self._key)
        except TrtEdgeError as exc:
            self._audit(name, version, False, str(exc))
            raise
        self._audit(name, version, True)
        return art.data, art.verification is not None

    def _audit(self, name: str, version: int, ok: bool, reason: str = "") -> None:
        from ..registry.store import AUDIT_NAME, Registry  # noqa: PLC0415
        if (self.root / AUDIT_NAME).exists():  # only a repository the registry manages
            try:
                Registry(self.root).log_load(name, version, ok, reason.splitlines()[0][:500] if reason else "")
            except (OSError, TrtEdgeError) as exc:
                log.warning("could not write the audit log: %s", exc)

    def _drift_monitor(self, name: str, version: str, folder: Path) -> Any:
        from ..registry.drift import REFERENCE_NAME, DriftMonitor, DriftReference  # noqa: PLC0415
        ref_path = folder / REFERENCE_NAME
        if not ref_path.is_file():
            return None
        gauge = self._drift_gauge(name, version) if self._drift_gauge else None
        return DriftMonitor(DriftReference.load(ref_path), threshold=self._drift_threshold,
                            model=f"{name}/{version}", on_score=gauge)

    async def load(self, name: str, *, instances: int | None = None) -> ModelEntry:
        """Load (or reload) ``name``; the old versions keep serving until the new ones are ready."""
        async with self._lock:
            entry = self._models.setdefault(name, ModelEntry(name))
            previous = dict(entry.versions)
            entry.state = "LOADING" if not previous else entry.state
            try:
                _, loaded = await asyncio.to_thread(self._load_sync, name, instances)
            except Exception as exc:
                if not previous:
                    entry.state, entry.reason = "UNAVAILABLE", str(exc)
                    if isinstance(exc, ModelNotFound):
                        self._models.pop(name, None)
                raise
            entry.versions = {sv.version: sv for sv in loaded}
            entry.state, entry.reason = "READY", ""
            log.info("loaded model '%s' versions %s", name, sorted(entry.versions, key=int))
        await self._retire(list(previous.values()))
        return entry

    async def unload(self, name: str) -> None:
        async with self._lock:
            entry = self._models.get(name)
            if entry is None:
                if name in self.names_on_disk():
                    return  # not loaded: nothing to do (Triton answers success too)
                raise ModelNotFound(f"failed to unload '{name}', no model named '{name}' in the repository.")
            versions = list(entry.versions.values())
            entry.versions = {}
            entry.state, entry.reason = "UNAVAILABLE", "unloaded"
        await self._retire(versions)
        log.info("unloaded model '%s'", name)

    async def _retire(self, versions: list[ServedVersion]) -> None:
        for sv in versions:
            await sv.scheduler.close()
            await asyncio.to_thread(sv.model.close, wait=True)

    async def close(self) -> None:
        for name in list(self._models):
            entry = self._models[name]
            versions = list(entry.versions.values())
            entry.versions = {}
            entry.state, entry.reason = "UNAVAILABLE", "server shutting down"
            await self._retire(versions)

    # ---- queries ---------------------------------------------------------------------------------
    def get(self, name: str, version: str | None = None) -> ServedVersion:
        entry = self._models.get(name)
        if entry is None or not entry.versions:
            raise ModelNotFound(f"Request for unknown model: '{name}' is not found")
        if version in (None, "", "-1"):
            sv = entry.latest()
            assert sv is not None
            return sv
        sv = entry.versions.get(str(version))
        if sv is None:
            raise ModelNotFound(f"Request for unknown model: '{name}' version {version} is not found")
        return sv

    def entry(self, name: str) -> ModelEntry | None:
        return self._models.get(name)

    def ready(self) -> bool:
        return all(e.state == "READY" for e in self._models.values() if e.versions or e.state == "LOADING")

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for name in sorted(set(self.names_on_disk()) | set(self._models)):
            entry = self._models.get(name)
            if entry is not None and entry.versions:
                rows += [{"name": name, "version": v, "state": "READY"} for v in sorted(entry.versions, key=int)]
            elif not ready_only:
                row: dict[str, Any] = {"name": name}
                if entry is not None:
                    row.update({"state": entry.state, "reason": entry.reason})
                rows.append(row)
        return rows

    def loaded(self) -> list[ServedVersion]:
        return [sv for e in self._models.values() for sv in e.versions.values()]
