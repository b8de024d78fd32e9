"""Encryption at rest: AES-256-GCM, decrypted in memory on load.

File format: ``TRTEENC1`` (8 bytes) + 12-byte random nonce + ciphertext + 16-byte tag. The
authenticated data is the file's name inside the version directory, so an encrypted
``model.onnx`` cannot be renamed into another file's place without failing authentication.

The key (32 bytes) comes from a file (raw 32 bytes, or 64 hex characters, or base64) or from an
environment variable (hex or base64; ``TRT_EDGE_MODEL_KEY`` by default). The OMS signature is made
over the *encrypted* files: verification needs no key, and nothing is decrypted before it passes.
"""
from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from .._lazy import require
from ..artifacts import atomic_write_bytes
from ..errors import ArtifactError, InvalidInputError

MAGIC = b"TRTEENC1"
NONCE = 12
KEY_BYTES = 32
DEFAULT_KEY_ENV = "TRT_EDGE_MODEL_KEY"
SUFFIX = ".enc"


def _decode_key(raw: bytes, where: str) -> bytes:
    if len(raw) == KEY_BYTES:
        return raw
    text = raw.strip()
    for decode in (binascii.unhexlify, base64.b64decode):
        try:
            key = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(key) == KEY_BYTES:
            return key
    raise InvalidInputError(f"The encryption key in {where} is not 32 bytes (raw, 64 hex characters or "
                            "base64). Make one with `trt-edge registry keygen --encryption-key FILE`.")


def load_key(key_file: str | os.PathLike[str] | None = None, env: str | None = DEFAULT_KEY_ENV) -> bytes:
    if key_file is not None:
        p = Path(key_file)
        if not p.is_file():
            raise InvalidInputError(f"Encryption key file '{p}' does not exist.")
        return _decode_key(p.read_bytes(), f"'{p}'")
    value = os.environ.get(env or "")
    if not value:
        raise InvalidInputError(f"No encryption key: give --encryption-key FILE or set ${env}.")
    return _decode_key(value.encode(), f"${env}")


def write_new_key(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.exists():
        raise InvalidInputError(f"'{p}' already exists; refusing to overwrite a key.")
    old = os.umask(0o077)
    try:
        atomic_write_bytes(p, secrets.token_bytes(KEY_BYTES).hex().encode() + b"\n")
        os.chmod(p, 0o600)
    finally:
        os.umask(old)
    return p


def is_encrypted(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def encrypt_bytes(data: bytes, key: bytes, name: str) -> bytes:
    require("cryptography", "model encryption")
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = secrets.token_bytes(NONCE)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, data, name.encode())


def decrypt_bytes(blob: bytes, key: bytes, name: str) -> bytes:
    require("cryptography", "model encryption")
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + NONCE + 16:
        raise ArtifactError(f"'{name}' is not a trt-edge encrypted file.")
    nonce = blob[len(MAGIC):len(MAGIC) + NONCE]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(MAGIC) + NONCE:], name.encode())
    except InvalidTag as exc:
        raise ArtifactError(f"Cannot decrypt '{name}': wrong key, or the file was altered or renamed.") from exc


def encrypt_file(src: str | os.PathLike[str], dst: str | os.PathLike[str], key: bytes, name: str) -> Path:
    return atomic_write_bytes(dst, encrypt_bytes(Path(src).read_bytes(), key, name))


def read_artifact(path: str | os.PathLike[str], key: bytes | None = None) -> bytes:
    """The plaintext bytes of ``path`` (``path`` or ``path.enc``), decrypting in memory if needed."""
    p = Path(path)
    enc = p if p.name.endswith(SUFFIX) else p.with_name(p.name + SUFFIX)
    if enc.exists() and enc != p or is_encrypted(p):
        src = enc if enc.exists() else p
        if key is None:
            raise InvalidInputError(f"'{src}' is encrypted; give the key (--encryption-key or ${DEFAULT_KEY_ENV}).")
        name = src.name[:-len(SUFFIX)] if src.name.endswith(SUFFIX) else src.name
        return decrypt_bytes(src.read_bytes(), key, name)
    return p.read_bytes()
