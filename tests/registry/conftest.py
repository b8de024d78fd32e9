"""Fixtures for the registry tests: keys, a test CA with a code-signing leaf, a model version."""
from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

pytest.importorskip("model_signing", reason="needs the registry extra: pip install 'trt-edge[registry]'")
pytest.importorskip("OpenSSL", reason="needs pyOpenSSL (registry extra)")

from trt_edge.registry.signing import generate_keypair  # noqa: E402

MODEL_SIGNING_CLI = Path(sys.executable).with_name("model_signing")


def model_signing_cli(*args: str) -> subprocess.CompletedProcess:
    if not MODEL_SIGNING_CLI.exists():
        pytest.skip("the model_signing command is not installed beside this Python")
    return subprocess.run([str(MODEL_SIGNING_CLI), *args], capture_output=True, text=True, timeout=120)


def tiny_onnx() -> onnx.ModelProto:
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.arange(12, dtype=np.float32).tolist())
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "tiny",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.fixture()
def keys(tmp_path: Path):
    return generate_keypair(tmp_path / "keys" / "signer.pem", tmp_path / "keys" / "signer.pub")


@pytest.fixture()
def other_keys(tmp_path: Path):
    return generate_keypair(tmp_path / "keys" / "other.pem", tmp_path / "keys" / "other.pub")


@pytest.fixture()
def artifacts(tmp_path: Path) -> Path:
    """A directory with one file of each artifact kind a version holds."""
    d = tmp_path / "artifacts"
    d.mkdir()
    onnx.save(tiny_onnx(), d / "model.onnx")
    (d / "model.onnx.json").write_text('{"kind": "onnx", "schema": 1}\n')
    (d / "model.plan").write_bytes(b"\x00PLAN" + bytes(range(256)) * 8)
    (d / "model.plan.json").write_text('{"kind": "engine", "schema": 1}\n')
    (d / "ranges.json").write_text('{"kind": "trt-edge-calibration-ranges", "tensors": {"x": {"amax": 1.0}}}\n')
    (d / "calibration.cache").write_bytes(b"TRT-100-EntropyCalibration2\nx: 3c010a14\n")
    (d / "libplugin.so").write_bytes(b"\x7fELF" + b"\x00" * 64)
    return d


def _name(cn: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(tmp: Path, cn: str):
    """A self-signed CA (EC P-256) written to tmp/<cn>.ca.pem; returns (key, cert, path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp / f"{cn}.ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_leaf(tmp: Path, ca_key, ca_cert, cn: str):
    """A code-signing leaf certificate and its key, issued by the CA; returns (key_path, cert_path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    kp, cp = tmp / f"{cn}.key.pem", tmp / f"{cn}.cert.pem"
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return kp, cp


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
