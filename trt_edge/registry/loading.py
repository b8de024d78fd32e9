"""Verified loading: check the signature, then hand out the artifact's bytes.

Everything that deserializes a model from a registry version (the runtime, ``build``, ``serve``)
goes through :func:`open_verified`: the whole version directory is verified under the trust policy
first, the bytes are read once (and decrypted in memory when stored encrypted), and their
SHA-256 is checked against what the signature covered, so a file swapped between verification and
reading is caught too. Only then does the caller parse them.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from ..errors import InvalidInputError, SignatureError
from .encryption import SUFFIX as ENC_SUFFIX
from .encryption import decrypt_bytes
from .policy import TrustPolicy, check_before_load
from .signing import Verification, bytes_match_manifest, files_in_manifest, signed_digests

log = logging.getLogger(__name__)

ARTIFACT_NAMES = ("model.plan", "model.engine", "model.onnx", "model.tflite")


@dataclasses.dataclass(frozen=True)
class VerifiedArtifact:
    path: Path              # the file on disk (``.enc`` when encrypted)
    name: str               # the artifact's logical name (``model.onnx``)
    data: bytes             # plaintext bytes, verified
    verification: Verification | None
    encrypted: bool


def _pick(version_dir: Path, artifact: str | None) -> Path:
    if artifact is not None:
        rel = Path(artifact)
        if rel.is_absolute() or ".." in rel.parts:
            raise InvalidInputError(f"Artifact name '{artifact}' must be a file inside the version directory.")
        for cand in (version_dir / rel, version_dir / (str(rel) + ENC_SUFFIX)):
            if cand.is_file():
                return cand
        raise InvalidInputError(f"'{version_dir}' has no artifact '{artifact}'.")
    for name in ARTIFACT_NAMES:
        for cand in (version_dir / name, version_dir / (name + ENC_SUFFIX)):
            if cand.is_file():
                return cand
    raise InvalidInputError(f"'{version_dir}' holds none of {', '.join(ARTIFACT_NAMES)} (or their .enc).")


def open_verified(version_dir: str | os.PathLike[str], policy: TrustPolicy, *, artifact: str | None = None,
                  key: bytes | None = None) -> VerifiedArtifact:
    root = Path(version_dir)
    if not root.is_dir():
        raise InvalidInputError(f"'{root}' is not a model version directory.")
    verification = check_before_load(root, policy)   # raises before anything is parsed
    path = _pick(root, artifact)
    data = path.read_bytes()
    if verification is not None:
        rel = path.relative_to(root).as_posix()
        parts = files_in_manifest(signed_digests(verification.signature)).get(rel, [])
        if not bytes_match_manifest(data, parts):
            raise SignatureError(f"Refusing '{path}': its bytes changed after the signature was verified "
                                 "(or it is not covered by the signature).")
    encrypted = path.name.endswith(ENC_SUFFIX)
    name = path.name[:-len(ENC_SUFFIX)] if encrypted else path.name
    if encrypted:
        if key is None:
            raise InvalidInputError(f"'{path}' is encrypted; give the key (--encryption-key FILE or "
                                    "$TRT_EDGE_MODEL_KEY).")
        data = decrypt_bytes(data, key, name)
    return VerifiedArtifact(path, name, data, verification, encrypted)


def load_plugin_library(version_dir: str | os.PathLike[str], policy: TrustPolicy, name: str,
                        *, key: bytes | None = None) -> "ctypes.CDLL":
    """dlopen a plugin library from a version directory, only after it verified.

    ``dlopen`` needs a path, so the verified bytes are written to a private temporary file and
    that copy is loaded: the file on disk can be swapped after verification without effect.
    """
    import ctypes
    import tempfile

    art = open_verified(version_dir, policy, artifact=name, key=key)
    tmpdir = Path(tempfile.mkdtemp(prefix="trt-edge-plugin-"))  # mode 0700
    copy = tmpdir / art.name
    copy.write_bytes(art.data)
    try:
        return ctypes.CDLL(str(copy))
    finally:
        copy.unlink()  # the mapping stays valid after unlink
        tmpdir.rmdir()
