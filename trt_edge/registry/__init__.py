"""Model maintenance and security: a versioned, signed store on the Triton repository layout.

- :mod:`.signing`: OpenSSF Model Signing (the ``model-signing`` library) sign/verify, key generation;
- :mod:`.policy`: the trust policy checked before anything is deserialized;
- :mod:`.store`: atomic publish, promote/rollback, retention, import of externally signed models;
- :mod:`.audit`: the hash-chained audit log;
- :mod:`.encryption`: AES-GCM encryption at rest, decrypted in memory;
- :mod:`.drift`: input drift against the calibration data (PSI), as a Prometheus gauge.

``model-signing``, ``pyOpenSSL`` and ``cryptography`` load lazily (``pip install 'trt-edge[registry]'``).
"""
from .audit import AuditLog, AuditReport, verify_audit_log
from .drift import DriftMonitor, DriftReference, psi
from .policy import TrustPolicy, check_before_load
from .signing import SIGNATURE_NAME, Verification, generate_keypair, sign_model, verify_model
from .store import Registry, VersionInfo

__all__ = ["AuditLog", "AuditReport", "verify_audit_log", "DriftMonitor", "DriftReference", "psi",
           "TrustPolicy", "check_before_load", "SIGNATURE_NAME", "Verification", "generate_keypair",
           "sign_model", "verify_model", "Registry", "VersionInfo"]
