"""Trust policy applied before anything from a model directory is deserialized.

``check_before_load(version_dir, policy)`` runs before an engine, an ONNX file or a plugin
library is opened: under ``require_signed`` an unsigned, tampered, extra-file or wrongly-signed
version raises :class:`~trt_edge.errors.SignatureError` and nothing from it is read. Without
``require_signed`` a present signature is still verified (a bad signature is never ignored), and
an unsigned version loads with a warning.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Sequence

from ..errors import InvalidInputError, SignatureError
from .signing import SIGNATURE_NAME, Verification, verify_model

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrustPolicy:
    require_signed: bool = False
    trusted_keys: tuple[Path, ...] = ()           # EC public keys (PEM): any one may have signed
    certificate_chains: tuple[Path, ...] = ()     # CA certificates for certificate signatures
    signature_name: str = SIGNATURE_NAME

    def __post_init__(self) -> None:
        if self.require_signed and not (self.trusted_keys or self.certificate_chains):
            raise InvalidInputError("require-signed needs a trust anchor: --trusted-key PUB (repeatable) or "
                                    "--trusted-ca CA.pem.")
        for p in (*self.trusted_keys, *self.certificate_chains):
            if not Path(p).is_file():
                raise InvalidInputError(f"Trust anchor '{p}' does not exist.")

    @classmethod
    def from_args(cls, require_signed: bool, keys: Sequence[str | os.PathLike[str]] = (),
                  chains: Sequence[str | os.PathLike[str]] = ()) -> "TrustPolicy":
        return cls(require_signed, tuple(Path(k) for k in keys), tuple(Path(c) for c in chains))

    @property
    def has_anchor(self) -> bool:
        return bool(self.trusted_keys or self.certificate_chains)


def check_before_load(version_dir: str | os.PathLike[str], policy: TrustPolicy) -> Verification | None:
    """Verify ``version_dir`` under ``policy``; return the verification (None: unsigned, allowed)."""
    root = Path(version_dir)
    sig = root / policy.signature_name
    if not sig.exists():
        if policy.require_signed:
            raise SignatureError(f"Refusing '{root}': it is not signed (no {policy.signature_name}) and the "
                                 "policy requires signed models.")
        log.warning("loading unsigned model directory %s (no %s)", root, policy.signature_name)
        return None
    if not policy.has_anchor:
        if policy.require_signed:  # unreachable: __post_init__ refuses it
            raise SignatureError("require-signed without a trust anchor")
        log.warning("%s is signed but no trusted key was given: signature not checked", root)
        return None
    errors = []
    for key in policy.trusted_keys:
        try:
            return verify_model(root, public_key=key, signature=sig)
        except SignatureError as exc:
            errors.append(f"key {key}: {exc}")
    if policy.certificate_chains:
        try:
            return verify_model(root, certificate_chain=list(policy.certificate_chains), signature=sig)
        except SignatureError as exc:
            errors.append(f"certificate chain: {exc}")
    raise SignatureError(f"Refusing '{root}': its signature does not verify with any trusted anchor:\n  "
                         + "\n  ".join(errors))
