"""PKCS#11 signing against SoftHSM: the key lives on the token; the signature verifies everywhere."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from trt_edge.cli import main
from trt_edge.registry.signing import generate_keypair, verify_model

from .conftest import model_signing_cli

SOFTHSM_LIB = next((p for p in ("/usr/lib/softhsm/libsofthsm2.so",
                                "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                                "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so") if Path(p).exists()), None)

pytestmark = [
    pytest.mark.skipif(shutil.which("softhsm2-util") is None or SOFTHSM_LIB is None,
                       reason="SoftHSM is not installed (Debian: apt-get install softhsm2)"),
]


def test_sign_with_a_softhsm_key_verifies_with_ours_and_the_cli(tmp_path, artifacts, monkeypatch):
    pytest.importorskip("PyKCS11", reason="PKCS#11 signing needs PyKCS11 (scripts/requirements/registry.txt)")
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    run = lambda *a: subprocess.run(["softhsm2-util", *a], check=True, capture_output=True, text=True)  # noqa: E731
    run("--init-token", "--free", "--label", "robot", "--pin", "1234", "--so-pin", "5678")
    keys = generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    run("--import", str(keys.private_key), "--token", "robot", "--label", "release", "--id", "01", "--pin", "1234")
    keys.private_key.unlink()  # from now on the private key exists only on the token

    uri = f"pkcs11:token=robot;object=release?pin-value=1234&module-path={SOFTHSM_LIB}"
    assert main(["registry", "sign", str(artifacts), "--pkcs11-uri", uri]) == 0
    assert verify_model(artifacts, public_key=keys.public_key).method == "key"
    res = model_signing_cli("verify", "key", str(artifacts), "--signature", str(artifacts / "model.sig"),
                            "--public_key", str(keys.public_key))
    assert res.returncode == 0, res.stderr
