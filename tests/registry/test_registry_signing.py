"""OMS signing interoperability: ours <-> the standard `model_signing` command, keys and certificates."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from trt_edge.cli import main
from trt_edge.errors import SignatureError
from trt_edge.registry.signing import sign_model, signed_file_names, verify_model

from .conftest import copy_tree, make_ca, make_leaf, model_signing_cli


def test_ours_signed_verifies_with_model_signing_cli(tmp_path, artifacts, keys):
    sig = sign_model(artifacts, private_key=keys.private_key)
    assert sig == artifacts / "model.sig"
    assert "model.sig" not in signed_file_names(sig)  # the signature never signs itself
    res = model_signing_cli("verify", "key", str(artifacts), "--signature", str(sig),
                            "--public_key", str(keys.public_key))
    assert res.returncode == 0, res.stderr
    assert "Verification succeeded" in res.stdout
    # and the standard command catches a change we make afterwards
    (artifacts / "model.plan").write_bytes(b"changed")
    res = model_signing_cli("verify", "key", str(artifacts), "--signature", str(sig),
                            "--public_key", str(keys.public_key))
    assert res.returncode != 0 and "model.plan" in res.stderr


def test_model_signing_cli_signed_verifies_with_ours(tmp_path, artifacts, keys, other_keys, capsys):
    res = model_signing_cli("sign", "key", str(artifacts), "--signature", str(artifacts / "model.sig"),
                            "--private_key", str(keys.private_key))
    assert res.returncode == 0, res.stderr
    v = verify_model(artifacts, public_key=keys.public_key)
    assert set(v.files) == {p.name for p in artifacts.iterdir() if p.name != "model.sig"}
    assert main(["registry", "verify", str(artifacts), "--public-key", str(keys.public_key)]) == 0
    assert main(["registry", "verify", str(artifacts), "--public-key", str(other_keys.public_key)]) == 1
    assert "NOT VERIFIED" in capsys.readouterr().err


def test_certificate_chain_both_ways_and_foreign_ca_refused(tmp_path, artifacts):
    ca_key, ca_cert, ca_path = make_ca(tmp_path, "test-root")
    leaf_key, leaf_cert = make_leaf(tmp_path, ca_key, ca_cert, "robot-release")
    other_key, other_cert, other_ca = make_ca(tmp_path, "other-root")
    rogue_key, rogue_cert = make_leaf(tmp_path, other_key, other_cert, "rogue")

    ours = copy_tree(artifacts, tmp_path / "ours")
    sign_model(ours, private_key=leaf_key, signing_certificate=leaf_cert, certificate_chain=[ca_path])
    assert verify_model(ours, certificate_chain=[ca_path]).method == "certificate"
    res = model_signing_cli("verify", "certificate", str(ours), "--signature", str(ours / "model.sig"),
                            "--certificate_chain", str(ca_path))
    assert res.returncode == 0, res.stderr

    theirs = copy_tree(artifacts, tmp_path / "theirs")
    res = model_signing_cli("sign", "certificate", str(theirs), "--signature", str(theirs / "model.sig"),
                            "--private_key", str(leaf_key), "--signing_certificate", str(leaf_cert),
                            "--certificate_chain", str(ca_path))
    assert res.returncode == 0, res.stderr
    verify_model(theirs, certificate_chain=[ca_path])

    rogue = copy_tree(artifacts, tmp_path / "rogue")
    sign_model(rogue, private_key=rogue_key, signing_certificate=rogue_cert, certificate_chain=[other_ca])
    with pytest.raises(SignatureError):
        verify_model(rogue, certificate_chain=[ca_path])  # a leaf from another CA is not trusted


def test_path_traversal_in_manifest_refused(tmp_path, artifacts, keys):
    sig = sign_model(artifacts, private_key=keys.private_key)
    bundle = json.loads(sig.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["name"] = "../../etc/passwd"
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(bundle))
    with pytest.raises(SignatureError, match="path traversal"):
        verify_model(artifacts, public_key=keys.public_key)


def test_cli_keygen_sign_verify_and_errors(tmp_path, artifacts, capsys):
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    assert main(["registry", "keygen", "--private-key", str(priv), "--public-key", str(pub)]) == 0
    assert oct(priv.stat().st_mode & 0o777) == "0o600"
    assert main(["registry", "keygen", "--private-key", str(priv)]) == 2  # never overwrite a key
    assert main(["registry", "sign", str(artifacts), "--private-key", str(priv)]) == 0
    assert main(["registry", "verify", str(artifacts), "--public-key", str(pub)]) == 0
    (artifacts / "model.sig").unlink()
    assert main(["registry", "verify", str(artifacts), "--public-key", str(pub)]) == 1
    assert "not signed" in capsys.readouterr().err
    assert main(["registry", "verify", str(tmp_path / "nope"), "--public-key", str(pub)]) == 2
    assert main(["registry", "sign", str(artifacts), "--private-key", str(pub)]) == 2  # a public key


def test_other_serializations_verify(tmp_path, artifacts, keys):
    """Signatures made with shards + blake2 (what large-model signers use) verify here."""
    import model_signing as ms

    sig = artifacts / "model.sig"
    ms.signing.Config().use_elliptic_key_signer(private_key=keys.private_key).set_hashing_config(
        ms.hashing.Config().use_shard_serialization(hashing_algorithm="blake2", shard_size=1024)
        .set_ignored_paths(paths=["model.sig"])).sign(artifacts, sig)
    assert verify_model(artifacts, public_key=keys.public_key).files
    # (the model_signing 1.1.1 *command* cannot check shard signatures: its verify always hashes
    # whole files; the library can, and we configure it from the signature's own serialization)
    (artifacts / "model.plan").write_bytes(b"x" * 5000)
    with pytest.raises(SignatureError, match="model.plan"):
        verify_model(artifacts, public_key=keys.public_key)
