"""Authentication and rate limits for the inference service.

Keys are API keys or bearer tokens; only their SHA-256 is kept (a key file never holds a secret).
A request presents its key as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; the service
hashes it and compares against every stored hash with :func:`hmac.compare_digest` (constant time,
and every entry is compared, so timing does not tell which one matched or how far). Each key has a
token-bucket rate limit and scopes: ``infer`` (inference, metadata, statistics) and ``repository``
(``/v2/repository/...``). Health endpoints are always open.

Key file: one key per line, ``NAME sha256:HEX [rate=R/s] [burst=B] [scopes=infer,repository]``;
``#`` starts a comment. Make a line with ``trt-edge serve --hash-api-key`` (reads the key on stdin).

:class:`RestrictedApi` is Triton's ``--http-restricted-api=API[,API]:HEADER=VALUE``: the named
API groups answer 403 unless the request carries that header with that value.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import threading
import time
from pathlib import Path

from ..errors import InvalidInputError

SCOPES: tuple[str, ...] = ("infer", "repository")
API_GROUPS = ("health", "metadata", "inference", "model-repository", "statistics")


def hash_key(key: str) -> str:
    """The stored form of a key: ``sha256:<hex>``."""
    if not key or len(key) < 16:
        raise InvalidInputError("API keys must be at least 16 characters; generate one with "
                                "`python -c \"import secrets; print(secrets.token_urlsafe(32))\"`.")
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes                         # sha256 of the key
    rate_per_s: float | None = None       # None: unlimited
    burst: int | None = None
    scopes: tuple[str, ...] = SCOPES


def _parse_line(line: str, where: str) -> ApiKey:
    parts = line.split()
    if len(parts) < 2 or not parts[1].startswith("sha256:"):
        raise InvalidInputError(f"{where}: expected 'NAME sha256:HEX [rate=R/s] [burst=B] [scopes=...]', "
                                f"got {line!r}. Make the hash with `trt-edge serve --hash-api-key`.")
    try:
        digest = bytes.fromhex(parts[1][len("sha256:"):])
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise InvalidInputError(f"{where}: '{parts[1][:20]}...' is not a 64-hex-digit SHA-256.")
    rate: float | None = None
    burst: int | None = None
    scopes: tuple[str, ...] = SCOPES
    for opt in parts[2:]:
        key, _, value = opt.partition("=")
        try:
            if key == "rate":
                rate = float(value.removesuffix("/s"))
                if rate <= 0:
                    raise ValueError
            elif key == "burst":
                burst = int(value)
                if burst < 1:
                    raise ValueError
            elif key == "scopes":
                scopes = tuple(s for s in value.split(",") if s)
                if not scopes or any(s not in SCOPES for s in scopes):
                    raise ValueError
            else:
                raise ValueError
        except ValueError:
            raise InvalidInputError(f"{where}: bad option {opt!r}; use rate=R/s (R > 0), burst=B (B >= 1), "
                                    f"scopes={','.join(SCOPES)}.") from None
    return ApiKey(parts[0], digest, rate, burst, scopes)


def load_key_file(path: str | os.PathLike[str]) -> list[ApiKey]:
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"API key file '{p}' does not exist.")
    keys = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            keys.append(_parse_line(line, f"{p}:{i}"))
    if not keys:
        raise InvalidInputError(f"API key file '{p}' holds no key.")
    names = [k.name for k in keys]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"API key file '{p}': key names must be unique, got {names}.")
    return keys


class _Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float) -> None:
        self.tokens = tokens
        self.stamp = time.monotonic()


@dataclasses.dataclass(frozen=True)
class AuthResult:
    ok: bool
    status: int = 200                 # 401 missing/unknown key, 403 scope, 429 rate limit
    key: str | None = None
    message: str = ""
    retry_after_s: float = 0.0


class Authenticator:
    """Checks keys and rate limits; thread-safe."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = list(keys)
        self._buckets = {k.name: _Bucket(float(k.burst or max(1.0, k.rate_per_s or 1.0))) for k in keys}
        self._lock = threading.Lock()

    def _match(self, presented: str) -> ApiKey | None:
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        found = None
        for k in self.keys:  # compare with every key: no early exit
            if hmac.compare_digest(digest, k.digest):
                found = k
        return found

    def check(self, authorization: str | None, api_key: str | None, scope: str) -> AuthResult:
        presented = api_key
        if authorization:
            kind, _, token = authorization.partition(" ")
            if kind.lower() == "bearer" and token.strip():
                presented = token.strip()
        if not presented:
            return AuthResult(False, 401, message="This endpoint needs an API key: send "
                              "'Authorization: Bearer KEY' or 'X-API-Key: KEY'.")
        key = self._match(presented)
        if key is None:
            return AuthResult(False, 401, message="The API key is not valid.")
        if scope not in key.scopes:
            return AuthResult(False, 403, key.name, f"The API key '{key.name}' may not use the {scope} API "
                              f"(its scopes: {', '.join(key.scopes)}).")
        if key.rate_per_s is not None:
            cap = float(key.burst or max(1.0, key.rate_per_s))
            with self._lock:
                b = self._buckets[key.name]
                now = time.monotonic()
                b.tokens = min(cap, b.tokens + (now - b.stamp) * key.rate_per_s)
                b.stamp = now
                if b.tokens < 1.0:
                    wait = (1.0 - b.tokens) / key.rate_per_s
                    return AuthResult(False, 429, key.name, f"Rate limit of {key.rate_per_s:g}/s exceeded for "
                                      f"API key '{key.name}'; retry after {wait:.2f} s.", wait)
                b.tokens -= 1.0
        return AuthResult(True, 200, key.name)


@dataclasses.dataclass(frozen=True)
class RestrictedApi:
    """``--http-restricted-api=model-repository,statistics:admin-key=SECRET``."""

    groups: tuple[str, ...]
    header: str
    value: str

    @classmethod
    def parse(cls, spec: str) -> "RestrictedApi":
        apis, sep, kv = spec.partition(":")
        header, eq, value = kv.partition("=")
        groups = tuple(a.strip() for a in apis.split(",") if a.strip())
        if not sep or not eq or not header or not groups or any(g not in API_GROUPS for g in groups):
            raise InvalidInputError(f"--http-restricted-api {spec!r}: expected API[,API]:HEADER=VALUE with "
                                    f"APIs from {', '.join(API_GROUPS)}.")
        return cls(groups, header.strip().lower(), value)

    def allows(self, group: str, header_value: str | None) -> bool:
        if group not in self.groups:
            return True
        return header_value is not None and hmac.compare_digest(header_value.encode(), self.value.encode())
