"""OpenSSF Model Signing (OMS) for model directories, through the ``model-signing`` library.

We do not invent a signature format: a directory signed here verifies with the standard
``model_signing verify key|certificate`` command, and a directory signed by anyone with OMS
verifies here. What this module adds around the library:

- the signature file (and our own temporary file while it is written) is left out of what is
  hashed, exactly as the ``model_signing`` CLI does (its Python ``sign()`` would hash it);
- the signature is written atomically;
- before any verification the signed manifest's file names are checked for path traversal
  (``../x``, absolute paths) so a hostile signature can never make us read outside the folder;
- failures become :class:`~trt_edge.errors.SignatureError` naming each offending file
  ("Hash mismatch for 'model.onnx'", "Extra files found", "Missing files").

Keys are elliptic-curve (P-256/384/521: what OMS key signing supports). Keyless Sigstore
signing needs the internet and is not wrapped here; use ``model_signing sign sigstore``.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import re
import time
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

from .._lazy import require
from ..artifacts import atomic_path, atomic_write_bytes
from ..errors import InvalidInputError, SignatureError

log = logging.getLogger(__name__)

SIGNATURE_NAME = "model.sig"
CURVES = {"p256": "SECP256R1", "p384": "SECP384R1", "p521": "SECP521R1"}


def _ms() -> Any:
    require("OpenSSL", "model signing")  # model-signing imports it without declaring it
    return require("model_signing", "model signing")


def _crypto() -> Any:
    return require("cryptography", "model signing keys")


# ---- keys --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class KeyPair:
    private_key: Path
    public_key: Path


def generate_keypair(private_path: str | os.PathLike[str], public_path: str | os.PathLike[str] | None = None,
                     *, curve: str = "p256", password: str | None = None,
                     overwrite: bool = False) -> KeyPair:
    """Write an EC private key (PKCS#8 PEM, mode 0600) and its public key (PEM)."""
    _crypto()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if curve not in CURVES:
        raise InvalidInputError(f"Unknown curve '{curve}': OMS key signing supports {sorted(CURVES)}.")
    priv = Path(private_path)
    pub = Path(public_path) if public_path is not None else priv.with_suffix(".pub")
    if priv.resolve() == pub.resolve():
        raise InvalidInputError("The private and public key paths are the same file; give two names.")
    for p in (priv, pub):
        if p.exists() and not overwrite:
            raise InvalidInputError(f"'{p}' already exists; refusing to overwrite a key (remove it first).")
    key = ec.generate_private_key(getattr(ec, CURVES[curve])())
    enc = (serialization.BestAvailableEncryption(password.encode()) if password
           else serialization.NoEncryption())
    priv_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    old = os.umask(0o077)  # the private key is never readable by others, whatever the umask
    try:
        atomic_write_bytes(priv, priv_pem)
        os.chmod(priv, 0o600)
    finally:
        os.umask(old)
    atomic_write_bytes(pub, pub_pem)
    return KeyPair(priv, pub)


# ---- the signed manifest -----------------------------------------------------------------
_BAD_NAME = re.compile(r"(^/|^[A-Za-z]:|\\|(^|/)\.\.(/|$)|\x00)")


def signed_file_names(signature: str | os.PathLike[str]) -> list[str]:
    """The file names an OMS signature (Sigstore bundle with a DSSE in-toto payload) lists.

    Read without trusting it (verification comes after): used to refuse path traversal and
    to name files in messages. Shards (``file:start:end``) count as their file.
    """
    return sorted(files_in_manifest(_signed_resources(signature)))


def signed_digests(signature: str | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    """File name -> (hash algorithm, hex digest) as the signature records them."""
    return _signed_resources(signature)


def _signed_resources(signature: str | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    sig = Path(signature)
    try:
        bundle = json.loads(sig.read_bytes())
        env = bundle["dsseEnvelope"]
        statement = json.loads(base64.b64decode(env["payload"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"'{sig}' is not an OpenSSF model signature (a Sigstore bundle with a "
                             f"DSSE envelope): {exc}. Re-sign the model.") from exc
    resources = (statement.get("predicate") or {}).get("resources")
    if not isinstance(resources, list):
        raise SignatureError(f"'{sig}' has no resource list in its payload; it is not an OMS signature.")
    out: dict[str, tuple[str, str]] = {}
    for res in resources:
        name = res.get("name") if isinstance(res, dict) else None
        if not isinstance(name, str) or not name:
            raise SignatureError(f"'{sig}' lists a resource without a name; refusing it.")
        out[name] = (str(res.get("algorithm", "")), str(res.get("digest", "")))
    return out


def check_manifest_names(names: Iterable[str], signature: Path) -> None:
    for name in names:
        parts = PurePosixPath(name).parts
        if _BAD_NAME.search(name) or ".." in parts:
            raise SignatureError(
                f"Signature '{signature}' names the file '{name}', which points outside the model "
                "directory (path traversal); refusing it.")


# ---- sign / verify -----------------------------------------------------------------------
def _ignored(model_dir: Path, paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    root = model_dir.resolve()
    out = []
    for p in paths:
        cand = Path(p)
        cand = (cand if cand.is_absolute() else Path.cwd() / cand).resolve()
        try:
            out.append(cand.relative_to(root))
        except ValueError:
            continue  # outside the folder: nothing to ignore
    return out


def _model_dir(path: str | os.PathLike[str]) -> Path:
    d = Path(path)
    if not d.exists():
        raise InvalidInputError(f"'{d}' does not exist; give the model version directory to sign or verify.")
    if not d.is_dir():
        raise InvalidInputError(f"'{d}' is a file; OMS signs a model directory (e.g. REPO/NAME/1/).")
    return d


def sign_model(model_dir: str | os.PathLike[str], *, private_key: str | os.PathLike[str] | None = None,
               signature: str | os.PathLike[str] | None = None,
               signing_certificate: str | os.PathLike[str] | None = None,
               certificate_chain: Sequence[str | os.PathLike[str]] = (),
               ignore_paths: Sequence[str | os.PathLike[str]] = (), password: str | None = None,
               pkcs11_uri: str | None = None) -> Path:
    """Sign every file under ``model_dir`` (OMS, files serialization, SHA-256).

    With ``signing_certificate`` (and its ``certificate_chain``) the signature carries an X.509
    identity; otherwise it is a plain key signature verified with the public key. ``pkcs11_uri``
    (``pkcs11:token=...;object=...?module-path=...``) signs with a key that never leaves a hardware
    token (needs PyKCS11); it replaces ``private_key``.
    """
    ms = _ms()
    root = _model_dir(model_dir)
    sig = Path(signature) if signature is not None else root / SIGNATURE_NAME
    if (private_key is None) == (pkcs11_uri is None):
        raise InvalidInputError("Give exactly one signing key: --private-key KEY.pem or --pkcs11-uri URI.")
    if private_key is not None and not Path(private_key).is_file():
        raise InvalidInputError(f"Private key '{private_key}' does not exist (make one with "
                                "`trt-edge registry keygen`).")
    cfg = ms.signing.Config()
    try:
        if pkcs11_uri is not None:
            require("PyKCS11", "PKCS#11 signing")
            cfg = (cfg.use_pkcs11_certificate_signer(pkcs11_uri=pkcs11_uri, signing_certificate=Path(
                signing_certificate), certificate_chain=[Path(c) for c in certificate_chain])
                   if signing_certificate is not None else cfg.use_pkcs11_signer(pkcs11_uri=pkcs11_uri))
        elif signing_certificate is not None:
            cfg = cfg.use_certificate_signer(private_key=private_key, signing_certificate=signing_certificate,
                                             certificate_chain=list(certificate_chain))
        else:
            cfg = cfg.use_elliptic_key_signer(private_key=private_key, password=password)
    except Exception as exc:  # noqa: BLE001 - the library raises ValueError/TypeError for bad keys
        raise SignatureError(f"Cannot use the signing key/certificate: {exc}. Give a PEM elliptic-curve "
                             "private key (P-256/384/521) and, with --signing-certificate, its "
                             "certificate.") from exc
    t0 = time.perf_counter()
    with atomic_path(sig) as tmp:
        ignored = _ignored(root, [*ignore_paths, sig, tmp])
        cfg.set_hashing_config(ms.hashing.Config().set_ignored_paths(paths=ignored, ignore_git_paths=True))
        tmp.unlink()  # the library writes the file itself; our rename makes it appear whole
        try:
            cfg.sign(root, tmp)
        except Exception as exc:  # noqa: BLE001
            raise SignatureError(f"Signing '{root}' failed: {exc}") from exc
    log.info("signed %s -> %s in %.2fs", root, sig, time.perf_counter() - t0)
    return sig


@dataclasses.dataclass(frozen=True)
class Verification:
    model_dir: Path
    signature: Path
    files: tuple[str, ...]     # the files the signature covers (all verified)
    method: str                # "key" | "certificate"
    seconds: float


def verify_model(model_dir: str | os.PathLike[str], *, public_key: str | os.PathLike[str] | None = None,
                 certificate_chain: Sequence[str | os.PathLike[str]] = (),
                 signature: str | os.PathLike[str] | None = None,
                 ignore_paths: Sequence[str | os.PathLike[str]] = ()) -> Verification:
    """Verify ``model_dir`` against its OMS signature; raise :class:`SignatureError` if it fails.

    Exactly one trust anchor: ``public_key`` (key signatures) or ``certificate_chain``
    (certificate signatures: the chain that must lead to the signing certificate).
    Nothing in the directory is parsed except the signature itself.
    """
    ms = _ms()
    root = _model_dir(model_dir)
    sig = Path(signature) if signature is not None else root / SIGNATURE_NAME
    if (public_key is None) == (not certificate_chain):
        raise InvalidInputError("Give exactly one trust anchor: --public-key PUB or --certificate-chain CA.")
    if not sig.is_file():
        raise SignatureError(f"'{root}' is not signed: no signature file '{sig}'. Sign it with "
                             "`trt-edge registry sign` (or `model_signing sign key`).")
    names = signed_file_names(sig)
    check_manifest_names(_signed_resources(sig), sig)
    cfg = ms.verifying.Config()
    try:
        if public_key is not None:
            if not Path(public_key).is_file():
                raise InvalidInputError(f"Public key '{public_key}' does not exist.")
            cfg = cfg.use_elliptic_key_verifier(public_key=public_key)
            method = "key"
        else:
            for c in certificate_chain:
                if not Path(c).is_file():
                    raise InvalidInputError(f"Certificate chain file '{c}' does not exist.")
            cfg = cfg.use_certificate_verifier(certificate_chain=list(certificate_chain))
            method = "certificate"
    except InvalidInputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise SignatureError(f"Cannot load the trust anchor: {exc}") from exc
    cfg.set_hashing_config(_hashing_like_signer(ms, sig, _ignored(root, [*ignore_paths, sig])))
    t0 = time.perf_counter()
    try:
        cfg.verify(root, sig)
    except Exception as exc:  # noqa: BLE001 - the library raises ValueError and crypto errors
        msg = str(exc) or type(exc).__name__
        if msg.startswith("Signature mismatch"):
            msg = "; ".join(_manifest_diff(root, sig, ignore_paths)) or msg
        else:
            msg = (f"the signature is not valid for this trust anchor ({msg}): it was made by another key or "
                   "certificate, or the signature file was altered")
        raise SignatureError(f"Signature verification of '{root}' failed: {msg}") from exc
    return Verification(root, sig, tuple(sorted(names)), method, time.perf_counter() - t0)


def verify_with_private_key(model_dir: str | os.PathLike[str], private_key: str | os.PathLike[str], *,
                            password: str | None = None,
                            signature: str | os.PathLike[str] | None = None) -> Verification:
    """Verify a directory just signed with ``private_key`` (its public half is derived here)."""
    _crypto()
    import tempfile

    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(Path(private_key).read_bytes(),
                                                 password.encode() if password else None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"Cannot read private key '{private_key}': {exc}") from exc
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    with tempfile.TemporaryDirectory(prefix="trt-edge-pub-") as tmp:
        pub = Path(tmp) / "key.pub"
        pub.write_bytes(pem)
        return verify_model(model_dir, public_key=pub, signature=signature)


def _hashing_like_signer(ms: Any, sig: Path, ignored: list[Path]) -> Any:
    """A hashing config with the signer's serialization (files or shards, sha256/blake2/blake3)
    plus our ignored paths: what the library would guess, with the signature file left out."""
    bundle = json.loads(sig.read_bytes())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    ser = (statement.get("predicate") or {}).get("serialization") or {}
    algo = {"blake2b": "blake2"}.get(ser.get("hash_type", "sha256"), ser.get("hash_type", "sha256"))
    symlinks = bool(ser.get("allow_symlinks", False))
    cfg = ms.hashing.Config()
    try:
        if ser.get("method") == "shards":
            cfg = cfg.use_shard_serialization(hashing_algorithm=algo, shard_size=int(ser["shard_size"]),
                                              allow_symlinks=symlinks)
        else:
            cfg = cfg.use_file_serialization(hashing_algorithm=algo, allow_symlinks=symlinks)
    except (KeyError, TypeError, ValueError) as exc:
        raise SignatureError(f"'{sig}' uses a serialization this model-signing cannot check: {ser}") from exc
    return cfg.set_ignored_paths(paths=ignored, ignore_git_paths=True)


def _manifest_diff(root: Path, sig: Path, ignore_paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Readable per-file differences between a directory and the (already authenticated) manifest."""
    expected = _signed_resources(sig)
    bundle = json.loads(sig.read_bytes())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    signed_ignores = (statement.get("predicate") or {}).get("serialization", {}).get("ignore_paths", [])
    ignored = {p.as_posix() for p in _ignored(root, [*ignore_paths, sig])} | set(signed_ignores)
    ignored |= {".git", ".github", ".gitignore", ".gitattributes"}
    actual: dict[str, Path] = {}
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root).as_posix()
        if f.is_file() and not any(rel == i or rel.startswith(i + "/") for i in ignored):
            actual[rel] = f
    files = files_in_manifest(expected)
    lines = []
    extra = sorted(set(actual) - set(files))
    missing = sorted(set(files) - set(actual))
    if extra:
        lines.append(f"Extra files found: {', '.join(extra)}")
    if missing:
        lines.append(f"Missing files: {', '.join(missing)}")
    for rel in sorted(set(actual) & set(files)):
        if not bytes_match_manifest(actual[rel].read_bytes(), files[rel]):
            lines.append(f"Hash mismatch for '{rel}'")
    return lines


def _hasher(algorithm: str) -> Any:
    import hashlib

    base = algorithm.split("-sharded-")[0].replace("-", "_")
    if base == "blake3":
        return require("blake3", "blake3 model signatures").blake3()
    return hashlib.new(base)


def files_in_manifest(resources: dict[str, tuple[str, str]]) -> dict[str, list[tuple[int, int, str, str]]]:
    """File name -> [(start, end, algorithm, digest)] (one entry spanning the file for files
    serialization; end -1 = to the end)."""
    out: dict[str, list[tuple[int, int, str, str]]] = {}
    for name, (algo, digest) in resources.items():
        if "-sharded-" in algo:
            fname, start, end = name.rsplit(":", 2)
            out.setdefault(fname, []).append((int(start), int(end), algo, digest))
        else:
            out.setdefault(name, []).append((0, -1, algo, digest))
    for parts in out.values():
        parts.sort()
    return out


def bytes_match_manifest(data: bytes, parts: list[tuple[int, int, str, str]]) -> bool:
    """True when ``data`` hashes to the signed digests and the shards cover it exactly."""
    if not parts:
        return False
    pos = 0
    for start, end, algo, digest in parts:
        stop = len(data) if end < 0 else end
        if start != pos or stop > len(data):
            return False
        try:
            h = _hasher(algo)
        except ValueError:
            return False
        h.update(memoryview(data)[start:stop])
        if h.hexdigest() != digest:
            return False
        pos = stop
    return pos == len(data)
