"""Atomic artifact writing, hashing and JSON sidecars.

Every file trt_edge produces is written to a temporary file in the target
folder and renamed over the destination only once it is complete, so a crash
or a failed step never leaves a half-written artifact. Every artifact gets a
sidecar ``<artifact>.json`` that records how to reproduce it: the hashes of
its sources, the tool versions and the options used.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import onnx

from .errors import ArtifactError

SIDECAR_SCHEMA = 2  # the layout of trt_edge.sidecars (1: flat, created and paths hashed)
SIDECAR_SUFFIX = ".json"

# Distributions whose versions are recorded in every sidecar when installed.
_TRACKED_DISTRIBUTIONS = (
    "trt-edge", "numpy", "onnx", "onnxruntime", "onnx-graphsurgeon", "torch",
    "tensorrt", "pycuda", "onnxscript", "transformers",
)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except FileNotFoundError as exc:
        raise ArtifactError(f"Cannot hash '{path}': the file does not exist.") from exc
    return h.hexdigest()


def model_hash(model: onnx.ModelProto | str | os.PathLike[str]) -> str:
    """SHA-256 of a model's serialized bytes (of the file, if a path)."""
    if isinstance(model, onnx.ModelProto):
        return sha256_bytes(model.SerializeToString(deterministic=True))
    return sha256_file(model)


# Temporary files are named ``.<dest name>.trt-edge-<pid>-<random>.tmp`` (folders: ``.tmpdir``)
# so that a later write can tell its own leftovers (from a SIGKILL'd or crashed run) apart
# from a concurrent writer's: a temp file whose process is gone is removed.
_TMP_TAG = "trt-edge"
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.trt-edge-(?P<pid>\d+)-[^.]+\.(?:tmp|tmpdir)$")
_LEGACY_TMP_AGE_S = 3600.0  # temp files of the old naming (no pid): removed when this old


def _tmp_prefix(dest: Path) -> str:
    return f".{dest.name}.{_TMP_TAG}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def clean_stale_temp_files(dest: str | os.PathLike[str]) -> list[Path]:
    """Remove our temp files for ``dest`` left by runs that were killed; returns what was removed.

    Only names of our own making are touched: ``.<name>.trt-edge-<pid>-*.tmp`` whose process
    no longer exists, and the older ``.<name>.<random>.tmp`` once over an hour old.
    """
    d = Path(dest)
    removed: list[Path] = []
    try:
        entries = list(d.parent.iterdir()) if d.parent.is_dir() else []
    except OSError:
        return removed
    legacy = re.compile(r"^\." + re.escape(d.name) + r"\.[A-Za-z0-9_]{8}\.tmp$")
    now = time.time()
    prefix = f".{d.name}."
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        m = _TMP_RE.match(entry.name)
        stale = False
        if m and m.group("name") == d.name:
            stale = not _pid_alive(int(m.group("pid")))
        elif legacy.match(entry.name):
            try:
                stale = now - entry.stat().st_mtime > _LEGACY_TMP_AGE_S
            except OSError:
                stale = False
        if not stale:
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            continue
    return removed


def _file_mode(dest: Path) -> int:
    """The mode a new file gets from the umask (an existing destination keeps its mode)."""
    try:
        return stat.S_IMODE(dest.stat().st_mode)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _drop_stale_sidecar(dest: Path) -> None:
    """Remove ``dest``'s sidecar before ``dest`` is replaced: it describes the old content.

    Renaming the new file over ``dest`` and then writing the new sidecar can be
    interrupted between the two; without this a reader would pair the new artifact with
    the old sidecar. Only a trt-edge sidecar that names ``dest`` is removed.
    """
    side = dest.with_name(dest.name + SIDECAR_SUFFIX)
    try:
        if side.stat().st_size > 16 << 20:
            return
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return
    if isinstance(meta, dict) and meta.get("artifact") == dest.name and "kind" in meta:
        with contextlib.suppress(FileNotFoundError):
            side.unlink()


def _prepare_folder(dest: Path) -> None:
    if dest.is_dir():
        raise ArtifactError(f"Cannot write '{dest}': it is a directory. Give a file name.")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ArtifactError(f"Cannot write '{dest}': a part of its folder is a file, not a folder "
                            f"({exc.filename}). Choose another output path.") from exc
    except PermissionError as exc:
        raise ArtifactError(f"Cannot create the folder of '{dest}': permission denied "
                            f"({exc.filename}). Choose an output path you can write to.") from exc
    clean_stale_temp_files(dest)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    On any exception (Ctrl-C included) the temporary file is removed and ``path`` is
    untouched. The file gets the umask's mode (an existing destination keeps its own);
    a trt-edge sidecar of the old ``path`` is removed just before the rename, so the new
    file is never paired with the old sidecar. Temp files left by killed runs are cleaned.
    """
    dest = Path(path)
    _prepare_folder(dest)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=_tmp_prefix(dest), suffix=".tmp", dir=dest.parent)
    except PermissionError as exc:
        raise ArtifactError(f"Cannot write '{dest}': its folder is not writable. Choose an output "
                            "path you can write to.") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _file_mode(dest))
        _drop_stale_sidecar(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_artifact(path: str | os.PathLike[str]) -> None:
    """Remove an artifact we are about to replace, its sidecar first (missing files are fine).

    For outputs derived from another one (a TensorRT cache from a ranges file): removing
    the old one before writing the new source means a kill in between never leaves the
    old derived file beside the new source.
    """
    p = Path(path)
    for f in (sidecar_path(p), p):
        with contextlib.suppress(FileNotFoundError):
            if not f.is_dir():
                f.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike[str],
              external_data: bool = False) -> Path:
    """Save an ONNX model atomically.

    Models over protobuf's 2 GB limit need ``external_data=True``; the weights
    then go to ``<name>.data`` beside the model (also written atomically).
    """
    dest = Path(path)
    if external_data:
        # onnx writes the data file relative to the model: write both under their
        # final names in a scratch folder beside the destination, then rename the
        # weights first and the model last, so a reader never sees a model
        # pointing at missing weights.
        # The old model goes first: it would read the new weights at its old offsets.
        _prepare_folder(dest)
        data_name = dest.name + ".data"
        with tempfile.TemporaryDirectory(prefix=_tmp_prefix(dest), suffix=".tmpdir", dir=dest.parent) as scratch:
            scratch_model = Path(scratch) / dest.name
            copy = onnx.ModelProto()
            copy.CopyFrom(model)  # saving with external data rewrites the proto: keep the caller's
            onnx.save_model(copy, scratch_model, save_as_external_data=True,
                            all_tensors_to_one_file=True, location=data_name, size_threshold=0)
            mode = _file_mode(dest)
            for f in Path(scratch).iterdir():
                os.chmod(f, mode)
            _drop_stale_sidecar(dest)
            with contextlib.suppress(FileNotFoundError):
                dest.unlink()
            if (Path(scratch) / data_name).exists():
                os.replace(Path(scratch) / data_name, dest.parent / data_name)
            os.replace(scratch_model, dest)
        return dest
    size = model.ByteSize()
    if size > 2_000_000_000:
        raise ArtifactError(
            f"Model is {size / 1e9:.1f} GB, over protobuf's 2 GB limit: save it with external data "
            "(--external-data / external_data=True).")
    return atomic_write_bytes(dest, model.SerializeToString())


def load_onnx(path: str | os.PathLike[str], load_external_data: bool = True) -> onnx.ModelProto:
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"ONNX file '{p}' does not exist. Check the path.")
    try:
        return onnx.load(str(p), load_external_data=load_external_data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises many types
        raise ArtifactError(f"'{p}' is not a readable ONNX model ({exc}). "
                            "Re-export it or check that the file is complete.") from exc


def tool_versions() -> dict[str, str]:
    """Versions of Python and the tracked packages (a fresh dict each call)."""
    return dict(_tool_versions())


@functools.lru_cache(maxsize=1)
def _tool_versions() -> tuple[tuple[str, str], ...]:
    # Reading ~20 packages' metadata costs ~25 ms; every provenance record (each quantize_qdq, also
    # the scoring probe of calibrate's auto) asked again. Installed versions do not change under a
    # running process in any way we support.
    versions = [("python", platform.python_version())]
    for dist in _TRACKED_DISTRIBUTIONS:
        try:
            versions.append((dist, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            continue
    return tuple(versions)


def machine_info() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "system": platform.system(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, paths, numpy values and tuples to JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():
        return obj.item()  # numpy scalar
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return obj.tolist()
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    return obj


def sidecar_path(artifact: str | os.PathLike[str]) -> Path:
    p = Path(artifact)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def write_sidecar(artifact: str | os.PathLike[str], kind: str, *,
                  sources: Mapping[str, str | os.PathLike[str]] | None = None,
                  options: Any = None, extra: Mapping[str, Any] | None = None,
                  provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``<artifact>.json`` describing how ``artifact`` was made (``trt_edge.sidecars``).

    ``sources`` maps a role ("onnx", "ranges", ...) to a file path (hashed here)
    or to an already computed ``sha256:...`` string. The hashed content has no
    timestamp and no absolute path (paths become file names; the full paths, the
    time and ``provenance`` go to the unhashed ``provenance`` section), so the same
    inputs give the same ``content_sha256``.
    """
    from .sidecars import make_sidecar  # the typed, canonical layout

    art = Path(artifact)
    if not art.exists():
        raise ArtifactError(f"Cannot write a sidecar for '{art}': the artifact does not exist.")
    src: dict[str, tuple[str, str | None]] = {}
    for role, value in (sources or {}).items():
        sval = os.fspath(value)
        if sval.startswith("sha256:"):
            src[role] = (sval.split(":", 1)[1], None)
        else:
            src[role] = (sha256_file(sval), os.path.abspath(sval))
    sidecar = make_sidecar(
        kind, artifact=art.name, sha256=sha256_file(art), size_bytes=art.stat().st_size, sources=src,
        tool_versions=tool_versions(), options=to_jsonable(options) if options is not None else {},
        section=to_jsonable(dict(extra or {})),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), host=platform.node(),
        provenance=to_jsonable(dict(provenance or {})))
    return atomic_write_json(sidecar_path(art), sidecar.to_document())


def read_sidecar(artifact: str | os.PathLike[str], *, verify: bool = True) -> dict[str, Any]:
    """The sidecar document of ``artifact``; with ``verify``, the artifact must match its sha256."""
    side = sidecar_path(artifact)
    if not side.exists():
        raise ArtifactError(f"'{artifact}' has no sidecar '{side.name}'. Was it made by trt-edge?")
    try:
        doc = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"Sidecar '{side}' is not valid JSON ({exc}). Rebuild the artifact.") from exc
    recorded = doc.get("sha256") if isinstance(doc, dict) else None
    if verify and recorded and Path(artifact).is_file():
        actual = sha256_file(artifact)
        if actual != recorded:
            raise ArtifactError(
                f"'{artifact}' does not match its sidecar '{side.name}': the sidecar records sha256 "
                f"{str(recorded)[:12]}..., the file is {actual[:12]}.... The artifact was changed or "
                "replaced after the sidecar was written: rebuild it with trt-edge (or delete the stale "
                "sidecar if you replaced the file on purpose).")
    if isinstance(doc, dict) and isinstance(doc.get("provenance"), dict):
        from .sidecars import resolve_paths  # full paths live in the unhashed provenance

        return resolve_paths(doc)
    return doc  # type: ignore[no-any-return]
