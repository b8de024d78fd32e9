"""A versioned model store on the Triton repository layout: ``REPO/NAME/VERSION/``.

Each version directory holds the artifacts (ONNX, engines, ranges/caches, plugin library, their
sidecars) and ``model.sig``. The store adds:

- **atomic publish**: the version is assembled (copied, optionally encrypted, signed and
  verified) in a hidden staging folder beside it and appears with one ``rename``; a crash at
  any point leaves the previous state intact (stale staging folders are removed next time);
- **promote / rollback**: the active version per model lives in ``REPO/NAME/registry.json``
  (replaced atomically), with the activation history that rollback walks back;
- **retention**: keep the newest N versions (never the active one);
- an **audit log** of every change (``REPO/audit.jsonl``, hash-chained).

Triton reads the same directory: it ignores the files we add at the repository and model level,
and version folders are plain numbered directories.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..artifacts import atomic_write_json, sha256_file
from ..errors import ArtifactError, InvalidInputError, SignatureError
from .audit import AuditLog
from .encryption import SUFFIX as ENC_SUFFIX
from .encryption import encrypt_file
from .policy import TrustPolicy, check_before_load
from .signing import SIGNATURE_NAME, sign_model, verify_with_private_key

log = logging.getLogger(__name__)

STATE_NAME = "registry.json"
AUDIT_NAME = "audit.jsonl"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in {".", ".."}:
        raise InvalidInputError(f"Model name '{name}' is not allowed: use letters, digits, '_', '-', '.' "
                                "(not starting with '.' or '-').")
    return name


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)
        fout.flush()
        os.fsync(fout.fileno())


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    name: str
    version: int
    path: Path
    files: tuple[str, ...]
    size_bytes: int
    signed: bool
    active: bool


class Registry:
    """``Registry(REPO).publish("mnist", ["m.onnx", "m.onnx.json"], private_key="k.pem")``."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = False) -> None:
        self.root = Path(root)
        if not self.root.exists():
            if not create:
                raise InvalidInputError(f"Model repository '{self.root}' does not exist (publish creates it).")
            self.root.mkdir(parents=True)
        if not self.root.is_dir():
            raise InvalidInputError(f"Model repository '{self.root}' is not a directory.")
        self.audit = AuditLog(self.root / AUDIT_NAME)

    # ---- state ------------------------------------------------------------------
    def _state_path(self, name: str) -> Path:
        return self.root / _check_name(name) / STATE_NAME

    def _state(self, name: str) -> dict[str, Any]:
        p = self._state_path(name)
        if not p.exists():
            return {"active": None, "history": []}
        try:
            state = json.loads(p.read_text())
            assert isinstance(state, dict)
            return state
        except (ValueError, AssertionError) as exc:
            raise ArtifactError(f"Registry state '{p}' is damaged ({exc}); restore it or re-promote a "
                                "version with `trt-edge registry promote`.") from exc

    def _write_state(self, name: str, state: dict[str, Any]) -> None:
        atomic_write_json(self._state_path(name), state)

    def models(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and _NAME_RE.match(p.name) and any(self._version_dirs(p.name)))

    def _version_dirs(self, name: str) -> Iterable[Path]:
        d = self.root / _check_name(name)
        if not d.is_dir():
            return []
        return sorted((p for p in d.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0),
                      key=lambda p: int(p.name))

    def versions(self, name: str) -> list[VersionInfo]:
        active = self._state(name).get("active")
        out = []
        for d in self._version_dirs(name):
            files = tuple(sorted(str(f.relative_to(d)) for f in d.rglob("*") if f.is_file()))
            out.append(VersionInfo(name, int(d.name), d, files, sum((d / f).stat().st_size for f in files),
                                   (d / SIGNATURE_NAME).exists(), int(d.name) == active))
        return out

    def active_version(self, name: str) -> int | None:
        active = self._state(name).get("active")
        if active is None:
            vs = [int(p.name) for p in self._version_dirs(name)]
            return max(vs) if vs else None  # Triton's default policy: the latest version
        return int(active)

    def version_dir(self, name: str, version: int) -> Path:
        d = self.root / _check_name(name) / str(int(version))
        if not d.is_dir():
            known = [v.version for v in self.versions(name)]
            raise InvalidInputError(f"Model '{name}' has no version {version} (versions: {known or 'none'}).")
        return d

    # ---- publish ----------------------------------------------------------------
    def clean_stale(self, name: str, older_than_s: float = 0.0) -> list[Path]:
        """Remove staging/trash folders left by interrupted publishes."""
        d = self.root / _check_name(name)
        removed = []
        if not d.is_dir():
            return removed
        now = time.time()
        for p in d.iterdir():
            if p.is_dir() and (p.name.startswith(STAGING_PREFIX) or p.name.startswith(TRASH_PREFIX)):
                pid = p.name.rsplit("-", 2)[-2] if p.name.count("-") >= 2 else ""
                alive = pid.isdigit() and _pid_alive(int(pid)) and int(pid) != os.getpid()
                if not alive and now - p.stat().st_mtime >= older_than_s:
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
        return removed

    def publish(self, name: str, files: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], *,
                version: int | None = None, private_key: str | os.PathLike[str] | None = None,
                signing_certificate: str | os.PathLike[str] | None = None,
                certificate_chain: Sequence[str | os.PathLike[str]] = (),
                encryption_key: bytes | None = None, encrypt: Sequence[str] = (),
                promote: bool = True, keep: int | None = None,
                _pause_s: float = 0.0) -> VersionInfo:
        """Publish ``files`` (or every file of a directory) as a new version of ``name``.

        ``encrypt``: names (of the published files) to store AES-GCM encrypted as ``NAME.enc``
        (all files but sidecars when ``encryption_key`` is given and ``encrypt`` is empty).
        The version is signed when a key is given; it is verified before it becomes visible.
        """
        _check_name(name)
        sources = _collect(files)
        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        self.clean_stale(name, older_than_s=0.0)
        existing = [int(p.name) for p in self._version_dirs(name)]
        if version is None:
            version = max(existing, default=0) + 1
        if int(version) <= 0:
            raise InvalidInputError(f"Version must be a positive integer (Triton's layout), got {version}.")
        final = model_dir / str(int(version))
        if final.exists():
            raise InvalidInputError(f"'{name}' version {version} already exists; versions are immutable "
                                    "(publish a new one).")
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{version}-{os.getpid()}-", dir=model_dir))
        try:
            for rel, src in sources.items():
                plain = not encryption_key or _is_sidecar(rel) or (encrypt and rel not in encrypt)
                if plain:
                    _copy_file(src, staging / rel)
                else:
                    encrypt_file(src, staging / (rel + ENC_SUFFIX), encryption_key, Path(rel).name)
                if _pause_s:
                    time.sleep(_pause_s)  # lets the kill test interrupt a publish between files
            if private_key is not None:
                sign_model(staging, private_key=private_key, signing_certificate=signing_certificate,
                           certificate_chain=certificate_chain)
                # verify the staged copy: what becomes visible is exactly what was signed
                if signing_certificate is None:
                    verify_with_private_key(staging, private_key)
            _fsync_dir(staging)
            os.rename(staging, final)  # the one step that makes the version visible
            _fsync_dir(model_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        info = next(v for v in self.versions(name) if v.version == int(version))
        self.audit.append("publish", model=name, version=int(version), files=list(info.files),
                          signed=info.signed, sha256={f: sha256_file(final / f) for f in info.files})
        if promote:
            self.promote(name, int(version))
        if keep is not None:
            self.retain(name, keep)
        return next(v for v in self.versions(name) if v.version == int(version))

    def import_signed(self, name: str, source_dir: str | os.PathLike[str], policy: TrustPolicy, *,
                      version: int | None = None, promote: bool = True) -> VersionInfo:
        """Verify an externally signed model directory, then publish it with its signature."""
        src = Path(source_dir)
        if not policy.has_anchor:
            raise InvalidInputError("Importing needs a trust anchor (--public-key or --certificate-chain).")
        try:
            check_before_load(src, dataclasses.replace(policy, require_signed=True))
        except SignatureError as exc:
            self.audit.append("refuse", model=name, source=str(src), reason=str(exc))
            raise
        info = self.publish(name, src, version=version, promote=False)
        # TOCTOU: the copy is what gets served, so verify the copy too
        try:
            check_before_load(info.path, dataclasses.replace(policy, require_signed=True))
        except SignatureError:
            self.remove_version(name, info.version, reason="imported copy failed verification")
            raise
        self.audit.append("import", model=name, version=info.version, source=str(src))
        if promote:
            self.promote(name, info.version)
        return next(v for v in self.versions(name) if v.version == info.version)

    # ---- promote / rollback / retention ----------------------------------------------
    def promote(self, name: str, version: int) -> None:
        self.version_dir(name, version)
        state = self._state(name)
        if state.get("active") == int(version):
            return
        history = list(state.get("history", []))
        if state.get("active") is not None:
            history.append(int(state["active"]))
        self._write_state(name, {"active": int(version), "history": history[-64:]})
        self.audit.append("promote", model=name, version=int(version), previous=state.get("active"))

    def rollback(self, name: str) -> int:
        state = self._state(name)
        history = [v for v in state.get("history", []) if (self.root / name / str(v)).is_dir()]
        if not history:
            raise InvalidInputError(f"'{name}' has no earlier active version to roll back to.")
        target = history.pop()
        self._write_state(name, {"active": target, "history": history})
        self.audit.append("rollback", model=name, version=target, previous=state.get("active"))
        return target

    def roll_back_if_active(self, name: str, failed: int, to: int) -> bool:
        """Automatic rollback: when ``failed`` (a version a loader refused) is the active one,
        make ``to`` (the version still serving) active again. True if it did."""
        if self.active_version(name) != int(failed):
            return False
        self.promote(name, int(to))
        log.warning("model '%s': registry rolled back from version %d to %d", name, int(failed), int(to))
        return True

    def remove_version(self, name: str, version: int, *, reason: str = "") -> None:
        d = self.version_dir(name, version)
        if self._state(name).get("active") == int(version):
            raise InvalidInputError(f"'{name}' version {version} is active; promote another version first.")
        trash = d.with_name(f"{TRASH_PREFIX}{version}-{os.getpid()}-{int(time.time())}")
        os.rename(d, trash)  # disappears in one step; the files go after
        shutil.rmtree(trash, ignore_errors=True)
        self.audit.append("remove", model=name, version=int(version), reason=reason)

    def retain(self, name: str, keep: int) -> list[int]:
        if keep < 1:
            raise InvalidInputError(f"--keep must be at least 1, got {keep}.")
        active = self._state(name).get("active")
        versions = [v.version for v in self.versions(name)]
        doomed = [v for v in versions[:-keep] if v != active]
        for v in doomed:
            self.remove_version(name, v, reason=f"retention keep={keep}")
        return doomed

    def log_load(self, name: str, version: int, ok: bool, reason: str = "") -> None:
        self.audit.append("load" if ok else "refuse", model=name, version=int(version),
                          **({"reason": reason} if reason else {}))


def _is_sidecar(rel: str) -> bool:
    return rel.endswith(".json") or rel == SIGNATURE_NAME


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _collect(files: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]) -> dict[str, Path]:
    """Relative name -> source path; a directory contributes every file under it."""
    items = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    if not items:
        raise InvalidInputError("Nothing to publish: give the artifact files or a directory.")
    out: dict[str, Path] = {}
    for item in items:
        p = Path(item)
        if not p.exists():
            raise InvalidInputError(f"'{p}' does not exist; nothing was published.")
        if p.is_symlink():
            raise InvalidInputError(f"'{p}' is a symbolic link; publish the file itself.")
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_symlink():
                    raise InvalidInputError(f"'{f}' is a symbolic link; publish real files only.")
                if f.is_file() and not any(part.startswith(".git") for part in f.relative_to(p).parts):
                    rel = f.relative_to(p).as_posix()
                    out[rel] = f
        else:
            if p.name in out:
                raise InvalidInputError(f"Two files named '{p.name}' in one publish; rename one.")
            out[p.name] = p
    return out
