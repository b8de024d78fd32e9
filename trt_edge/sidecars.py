"""Typed, canonical sidecars: one dataclass per artifact kind, with a schema version.

A sidecar ``<artifact>.json`` says what an artifact is and how it was made. It
has two parts:

* the **content** (everything but ``provenance`` and ``content_sha256``): kind,
  schemas, artifact file name, its sha256 and size, the sources' hashes, tool
  versions, options and the kind's own section. It holds no timestamps and no
  absolute paths (a path becomes its file name), so identical inputs give a
  byte-identical :meth:`Sidecar.canonical_bytes` (sorted keys, no whitespace,
  ASCII) and the same ``content_sha256``: what the registry signs.
* the **provenance** (not hashed): when, on which host, and the full paths of
  the sources and of path-valued options.

The document on disk is the content's keys at the top level (readers of the
first schema keep working) plus ``content_sha256`` and ``provenance``.
This module is pure (no file access): ``trt_edge.artifacts`` hashes the files
and writes / reads the documents.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
from typing import Any, ClassVar, Mapping

from .errors import ArtifactError

#: Version of the common layout (schema 1: flat, with ``created`` and source paths inside).
SIDECAR_SCHEMA = 2
UNHASHED_KEYS = frozenset({"provenance", "content_sha256"})
_COMMON_KEYS = ("schema", "kind", "kind_schema", "artifact", "sha256", "size_bytes", "sources",
                "tool_versions", "options")


def _looks_like_path(value: str) -> bool:
    return len(value) > 1 and os.path.isabs(value) and ("/" in value or "\\" in value)


def canonicalize(value: Any, where: str, paths: dict[str, str]) -> Any:
    """JSON value with absolute paths replaced by their file names (full paths go to ``paths``)."""
    if isinstance(value, Mapping):
        return {str(k): canonicalize(v, f"{where}.{k}" if where else str(k), paths) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonicalize(v, f"{where}[{i}]", paths) for i, v in enumerate(value)]
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and _looks_like_path(value):
        paths[where] = value
        return os.path.basename(value.rstrip("/\\")) or value
    if isinstance(value, float) and value != value:
        return None
    return value


def canonical_json(obj: Any) -> bytes:
    """The one serialization that is hashed: sorted keys, no whitespace, ASCII.

    NaN never gets here (:func:`canonicalize` makes it null); an infinite option
    (e.g. an unbounded tolerance) is written as ``Infinity``, as Python's json does.
    """
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"Sidecar content is not plain JSON ({exc}); convert it with "
                            "trt_edge.artifacts.to_jsonable first.") from exc


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where and when an artifact was made (never hashed)."""

    created: str = ""
    host: str = ""
    paths: Mapping[str, str] = dataclasses.field(default_factory=dict)
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"created": self.created, "host": self.host, "paths": dict(self.paths), **dict(self.extra)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> "Provenance":
        d = dict(d or {})
        return cls(str(d.pop("created", "")), str(d.pop("host", "")), dict(d.pop("paths", {}) or {}), d)


@dataclasses.dataclass(frozen=True)
class Sidecar:
    """The common part of every sidecar; subclasses fix the kind and its required section."""

    KIND: ClassVar[str] = ""
    KIND_SCHEMA: ClassVar[int] = 1
    #: Keys of the kind's own section that must be present (validated on parse).
    REQUIRED: ClassVar[tuple[str, ...]] = ()

    kind: str
    artifact: str                      # file name only
    sha256: str                        # of the artifact bytes
    size_bytes: int
    sources: Mapping[str, str]         # role -> sha256 of the source
    tool_versions: Mapping[str, str]
    options: Mapping[str, Any]
    section: Mapping[str, Any]         # the kind's own keys (e.g. "engine")
    provenance: Provenance = dataclasses.field(default_factory=Provenance)
    schema: int = SIDECAR_SCHEMA
    kind_schema: int = 1

    def content(self) -> dict[str, Any]:
        """The hashed part, as a JSON object."""
        doc: dict[str, Any] = dict(self.section)
        doc.update({"schema": self.schema, "kind": self.kind, "kind_schema": self.kind_schema,
                    "artifact": self.artifact, "sha256": self.sha256, "size_bytes": self.size_bytes,
                    "sources": {role: {"sha256": h} for role, h in sorted(self.sources.items())},
                    "tool_versions": dict(self.tool_versions), "options": dict(self.options)})
        return doc

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.content())

    @property
    def content_sha256(self) -> str:
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def to_document(self) -> dict[str, Any]:
        doc = self.content()
        doc["content_sha256"] = self.content_sha256
        doc["provenance"] = self.provenance.to_json()
        return doc


@dataclasses.dataclass(frozen=True)
class OnnxExportSidecar(Sidecar):
    KIND: ClassVar[str] = "onnx-export"


@dataclasses.dataclass(frozen=True)
class OptimizedOnnxSidecar(Sidecar):
    KIND: ClassVar[str] = "onnx.optimized"


@dataclasses.dataclass(frozen=True)
class Fp16OnnxSidecar(Sidecar):
    KIND: ClassVar[str] = "onnx-fp16"


@dataclasses.dataclass(frozen=True)
class QdqOnnxSidecar(Sidecar):
    KIND: ClassVar[str] = "onnx-int8-qdq"


@dataclasses.dataclass(frozen=True)
class OnnxRuntimeArtifactSidecar(Sidecar):
    KIND: ClassVar[str] = "onnxruntime-artifact"


@dataclasses.dataclass(frozen=True)
class EngineSidecar(Sidecar):
    KIND: ClassVar[str] = "tensorrt-engine"
    REQUIRED: ClassVar[tuple[str, ...]] = ("engine",)


@dataclasses.dataclass(frozen=True)
class CalibrationRangesSidecar(Sidecar):
    KIND: ClassVar[str] = "calibration-ranges"


@dataclasses.dataclass(frozen=True)
class TrtCalibrationCacheSidecar(Sidecar):
    KIND: ClassVar[str] = "trt-calibration-cache"


SIDECAR_KINDS: dict[str, type[Sidecar]] = {
    cls.KIND: cls for cls in (OnnxExportSidecar, OptimizedOnnxSidecar, Fp16OnnxSidecar, QdqOnnxSidecar,
                              OnnxRuntimeArtifactSidecar, EngineSidecar, CalibrationRangesSidecar,
                              TrtCalibrationCacheSidecar)}


def make_sidecar(kind: str, *, artifact: str, sha256: str, size_bytes: int,
                 sources: Mapping[str, tuple[str, str | None]], tool_versions: Mapping[str, str],
                 options: Any, section: Mapping[str, Any], created: str = "", host: str = "",
                 provenance: Mapping[str, Any] | None = None) -> Sidecar:
    """A typed sidecar from JSON-ready values; ``sources``: role -> (sha256, path or None)."""
    paths: dict[str, str] = {}
    for role, (_, path) in sources.items():
        if path is not None:
            paths[f"sources.{role}"] = path
    canon_options = canonicalize(options or {}, "options", paths)
    canon_section = canonicalize(dict(section), "", paths)
    cls = SIDECAR_KINDS.get(kind, Sidecar)
    clash = sorted(set(canon_section) & (set(_COMMON_KEYS) | UNHASHED_KEYS))
    if clash:
        raise ArtifactError(f"Sidecar section keys {clash} clash with the common sidecar keys; rename them.")
    return cls(kind, os.path.basename(artifact), sha256, int(size_bytes),
               {role: h for role, (h, _) in sources.items()}, dict(tool_versions),
               canon_options if isinstance(canon_options, dict) else {"value": canon_options},
               canon_section, Provenance(created, host, paths, dict(provenance or {})),
               kind_schema=cls.KIND_SCHEMA)


def parse_sidecar(doc: Mapping[str, Any], where: str = "sidecar") -> Sidecar:
    """The typed sidecar of a document (schema 1 documents are read too)."""
    if not isinstance(doc, Mapping) or "kind" not in doc:
        raise ArtifactError(f"'{where}' is not a trt-edge sidecar (no 'kind'). Rebuild the artifact.")
    kind = str(doc["kind"])
    cls = SIDECAR_KINDS.get(kind, Sidecar)
    section = {k: v for k, v in doc.items() if k not in _COMMON_KEYS and k not in UNHASHED_KEYS
               and k != "created"}
    missing = [k for k in cls.REQUIRED if k not in section]
    if missing:
        raise ArtifactError(f"'{where}' is a '{kind}' sidecar without {missing}. Rebuild the artifact.")
    sources = {str(r): str(v.get("sha256", "")) if isinstance(v, Mapping) else str(v)
               for r, v in dict(doc.get("sources") or {}).items()}
    prov = Provenance.from_json(doc.get("provenance"))
    if "created" in doc and not prov.created:  # schema 1
        prov = dataclasses.replace(prov, created=str(doc["created"]))
    return cls(kind, str(doc.get("artifact", "")), str(doc.get("sha256", "")), int(doc.get("size_bytes", 0)),
               sources, dict(doc.get("tool_versions") or {}), dict(doc.get("options") or {}), section, prov,
               schema=int(doc.get("schema", 1)), kind_schema=int(doc.get("kind_schema", 1)))


_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def resolve_paths(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a document with the full paths from its provenance put back where they were.

    Readers that need the paths (a source's ``path``, plugin libraries, options)
    get them; the hashed content on disk keeps only file names.
    """
    out = copy.deepcopy(dict(doc))
    prov = out.get("provenance")
    paths = prov.get("paths") if isinstance(prov, Mapping) else None
    for where, full in dict(paths or {}).items():
        keys: list[str | int] = [int(i) if i else k for k, i in _TOKEN.findall(str(where))]
        if len(keys) == 2 and keys[0] == "sources" and isinstance(out.get("sources"), dict):
            entry = out["sources"].get(keys[1])
            if isinstance(entry, dict):
                entry["path"] = full
            continue
        node: Any = out
        try:
            for key in keys[:-1]:
                node = node[key]
            if keys and isinstance(node, (dict, list)):
                node[keys[-1]] = full  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            continue  # the content changed shape: keep the file name
    return out


def content_matches(doc: Mapping[str, Any]) -> bool:
    """Whether a document's recorded ``content_sha256`` matches its content (False if none recorded)."""
    recorded = doc.get("content_sha256")
    content = {k: v for k, v in doc.items() if k not in UNHASHED_KEYS}
    return bool(recorded) and hashlib.sha256(canonical_json(content)).hexdigest() == recorded


__all__ = ["SIDECAR_SCHEMA", "Sidecar", "Provenance", "SIDECAR_KINDS", "make_sidecar", "parse_sidecar",
           "canonical_json", "canonicalize", "content_matches", "resolve_paths", "EngineSidecar", "OnnxExportSidecar",
           "OptimizedOnnxSidecar", "Fp16OnnxSidecar", "QdqOnnxSidecar", "OnnxRuntimeArtifactSidecar",
           "CalibrationRangesSidecar", "TrtCalibrationCacheSidecar"]
