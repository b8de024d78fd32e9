"""trt-edge registry: versioned, OpenSSF-signed model store on the Triton repository layout."""
from __future__ import annotations

import argparse
import logging
import sys

ORDER = 90
log = logging.getLogger("trt_edge")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("registry", help="sign, verify, publish, promote and roll back model versions",
                       description="A versioned model store on the Triton layout (REPO/NAME/VERSION/), signed "
                                   "with OpenSSF Model Signing (the `model-signing` library): a directory "
                                   "signed here verifies with `model_signing verify`, and the other way round.")
    rs = p.add_subparsers(dest="registry_command", metavar="ACTION")
    rs.required = True

    k = rs.add_parser("keygen", help="make an elliptic-curve signing key pair (and/or an encryption key)")
    k.add_argument("--private-key", help="where to write the private key (PEM, mode 0600)")
    k.add_argument("--public-key", help="where to write the public key (default: PRIVATE with .pub)")
    k.add_argument("--curve", choices=["p256", "p384", "p521"], default="p256")
    k.add_argument("--encryption-key", help="also write a 256-bit AES key for encryption at rest here")
    k.set_defaults(func=_keygen)

    s = rs.add_parser("sign", help="sign a model directory (OMS)")
    s.add_argument("path", help="the model version directory")
    key = s.add_mutually_exclusive_group(required=True)
    key.add_argument("--private-key", help="EC private key (PEM)")
    key.add_argument("--pkcs11-uri", help="a key on a PKCS#11 token, e.g. "
                     "'pkcs11:token=NAME;object=KEY?pin-value=PIN&module-path=/usr/lib/softhsm/libsofthsm2.so'")
    s.add_argument("--signing-certificate", help="X.509 certificate of the key (certificate signing)")
    s.add_argument("--certificate-chain", action="append", default=[], help="intermediate/root certs (repeatable)")
    s.add_argument("--signature", help="signature path (default PATH/model.sig)")
    s.add_argument("--ignore-paths", action="append", default=[], help="files to leave unsigned (repeatable)")
    s.set_defaults(func=_sign)

    v = rs.add_parser("verify", help="verify a model directory's OMS signature")
    v.add_argument("path")
    v.add_argument("--public-key", help="the signer's public key (key signatures)")
    v.add_argument("--certificate-chain", action="append", default=[],
                   help="trusted CA certificates (certificate signatures; repeatable)")
    v.add_argument("--signature", help="signature path (default PATH/model.sig)")
    v.add_argument("--ignore-paths", action="append", default=[])
    v.set_defaults(func=_verify)

    pub = rs.add_parser("publish", help="publish files as a new version (atomic), optionally signed/encrypted")
    pub.add_argument("repo", help="the model repository (Triton layout)")
    pub.add_argument("name", help="model name")
    pub.add_argument("files", nargs="+", help="artifact files, or one directory")
    pub.add_argument("--version", type=int, help="version number (default: next)")
    pub.add_argument("--private-key", help="sign the version with this key")
    pub.add_argument("--signing-certificate")
    pub.add_argument("--certificate-chain", action="append", default=[])
    pub.add_argument("--encryption-key", help="store artifacts AES-GCM encrypted with this key file")
    pub.add_argument("--no-promote", action="store_true", help="publish without making it the active version")
    pub.add_argument("--keep", type=int, help="retain only the newest N versions")
    pub.set_defaults(func=_publish)

    imp = rs.add_parser("import", help="verify an externally signed model directory, then publish it")
    imp.add_argument("repo")
    imp.add_argument("name")
    imp.add_argument("source", help="a directory signed with OMS (model.sig inside)")
    imp.add_argument("--public-key", action="append", default=[])
    imp.add_argument("--certificate-chain", action="append", default=[])
    imp.add_argument("--version", type=int)
    imp.set_defaults(func=_import)

    ls = rs.add_parser("list", help="list models and versions")
    ls.add_argument("repo")
    ls.add_argument("name", nargs="?")
    ls.set_defaults(func=_list)

    pr = rs.add_parser("promote", help="make a version the active one")
    pr.add_argument("repo")
    pr.add_argument("name")
    pr.add_argument("version", type=int)
    pr.set_defaults(func=_promote)

    rb = rs.add_parser("rollback", help="go back to the previously active version")
    rb.add_argument("repo")
    rb.add_argument("name")
    rb.set_defaults(func=_rollback)

    au = rs.add_parser("audit-verify", help="check the hash chain of the audit log")
    au.add_argument("log", help="REPO/audit.jsonl (or a repository directory)")
    au.set_defaults(func=_audit)

    dr = rs.add_parser("drift-reference", help="make the drift reference of a version from calibration data")
    dr.add_argument("data", help="calibration .npz (input name -> array)")
    dr.add_argument("-o", "--output", required=True, help="drift_reference.json to write")
    dr.add_argument("--bins", type=int, default=20)
    dr.set_defaults(func=_drift_reference)


def _keygen(args: argparse.Namespace) -> int:
    from ..errors import InvalidInputError
    from ..registry.encryption import write_new_key
    from ..registry.signing import generate_keypair

    if not args.private_key and not args.encryption_key:
        raise InvalidInputError("Give --private-key FILE (signing keys) and/or --encryption-key FILE.")
    if args.private_key:
        kp = generate_keypair(args.private_key, args.public_key, curve=args.curve)
        print(f"private key: {kp.private_key} (keep it secret)\npublic key:  {kp.public_key}")
    if args.encryption_key:
        print(f"encryption key: {write_new_key(args.encryption_key)} (keep it secret)")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from ..registry.signing import sign_model

    sig = sign_model(args.path, private_key=args.private_key, signature=args.signature,
                     signing_certificate=args.signing_certificate, certificate_chain=args.certificate_chain,
                     ignore_paths=args.ignore_paths, pkcs11_uri=args.pkcs11_uri)
    print(f"signed {args.path} -> {sig}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ..errors import SignatureError
    from ..registry.signing import verify_model

    try:
        res = verify_model(args.path, public_key=args.public_key, certificate_chain=args.certificate_chain,
                           signature=args.signature, ignore_paths=args.ignore_paths)
    except SignatureError as exc:
        print(f"NOT VERIFIED: {exc}", file=sys.stderr)
        return 1
    print(f"verified {res.model_dir} ({res.method} signature, {len(res.files)} files, {res.seconds:.2f}s): "
          + ", ".join(res.files))
    return 0


def _publish(args: argparse.Namespace) -> int:
    from ..registry.encryption import load_key
    from ..registry.store import Registry

    key = load_key(args.encryption_key) if args.encryption_key else None
    reg = Registry(args.repo, create=True)
    info = reg.publish(args.name, args.files, version=args.version, private_key=args.private_key,
                       signing_certificate=args.signing_certificate, certificate_chain=args.certificate_chain,
                       encryption_key=key, promote=not args.no_promote, keep=args.keep)
    state = "active" if info.active else "not active"
    print(f"published {args.name} version {info.version} ({len(info.files)} files, "
          f"{info.size_bytes / 1e6:.2f} MB, {'signed' if info.signed else 'UNSIGNED'}, {state}) -> {info.path}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from ..registry.policy import TrustPolicy
    from ..registry.store import Registry

    policy = TrustPolicy.from_args(True, args.public_key, args.certificate_chain)
    info = Registry(args.repo, create=True).import_signed(args.name, args.source, policy, version=args.version)
    print(f"imported {args.source} as {args.name} version {info.version} (verified) -> {info.path}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from ..registry.store import Registry

    reg = Registry(args.repo)
    names = [args.name] if args.name else reg.models()
    print(f"{'model':<24} {'version':>7}  {'active':<6} {'signed':<6} {'size MB':>9}  files")
    for name in names:
        for v in reg.versions(name):
            print(f"{name:<24} {v.version:>7}  {'*' if v.active else '':<6} {'yes' if v.signed else 'no':<6} "
                  f"{v.size_bytes / 1e6:>9.2f}  {', '.join(v.files)}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from ..registry.store import Registry

    Registry(args.repo).promote(args.name, args.version)
    print(f"{args.name}: version {args.version} is active")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from ..registry.store import Registry

    v = Registry(args.repo).rollback(args.name)
    print(f"{args.name}: rolled back to version {v}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..registry.audit import verify_audit_log
    from ..registry.store import AUDIT_NAME

    path = Path(args.log)
    report = verify_audit_log(path / AUDIT_NAME if path.is_dir() else path)
    print(report.describe())
    return 0 if report.ok else 1


def _drift_reference(args: argparse.Namespace) -> int:
    from ..registry.drift import DriftReference

    ref = DriftReference.from_npz(args.data, bins=args.bins)
    ref.save(args.output)
    print(f"drift reference for {', '.join(ref.tensors)} from {ref.samples} samples -> {args.output}")
    return 0
