"""Versioned store: atomic publish (kill test), promote/rollback/retention, import, encryption, audit."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from trt_edge.cli import main
from trt_edge.errors import ArtifactError, InvalidInputError, SignatureError
from trt_edge.registry.audit import AuditLog, verify_audit_log
from trt_edge.registry.encryption import decrypt_bytes, is_encrypted, load_key, write_new_key
from trt_edge.registry.loading import open_verified
from trt_edge.registry.policy import TrustPolicy
from trt_edge.registry.signing import sign_model
from trt_edge.registry.store import Registry

from .conftest import copy_tree, model_signing_cli


def test_publish_promote_rollback_retention(tmp_path, artifacts, keys):
    reg = Registry(tmp_path / "repo", create=True)
    v1 = reg.publish("mnist", artifacts, private_key=keys.private_key)
    assert (v1.version, v1.active, v1.signed) == (1, True, True)
    assert (tmp_path / "repo" / "mnist" / "1" / "model.sig").exists()
    (artifacts / "model.plan").write_bytes(b"\x00PLAN v2")
    v2 = reg.publish("mnist", artifacts, private_key=keys.private_key)
    assert reg.active_version("mnist") == 2 and v2.active
    # what we published verifies with the standard command too
    res = model_signing_cli("verify", "key", str(v2.path), "--signature", str(v2.path / "model.sig"),
                            "--public_key", str(keys.public_key))
    assert res.returncode == 0, res.stderr
    assert reg.rollback("mnist") == 1 and reg.active_version("mnist") == 1
    reg.promote("mnist", 2)
    for _ in range(3):
        reg.publish("mnist", artifacts, private_key=keys.private_key, promote=False)
    assert [v.version for v in reg.versions("mnist")] == [1, 2, 3, 4, 5]
    removed = reg.retain("mnist", keep=2)
    assert removed == [1, 3] and [v.version for v in reg.versions("mnist")] == [2, 4, 5]  # 2 is active
    with pytest.raises(InvalidInputError, match="already exists"):
        reg.publish("mnist", artifacts, version=4)
    with pytest.raises(InvalidInputError, match="not allowed"):
        reg.publish("../evil", artifacts)
    events = [e["event"] for e in reg.audit.entries()]
    assert events.count("publish") == 5 and "rollback" in events and events.count("remove") == 2
    assert verify_audit_log(reg.audit.path).ok


def test_import_verifies_external_signature(tmp_path, artifacts, keys, other_keys):
    res = model_signing_cli("sign", "key", str(artifacts), "--signature", str(artifacts / "model.sig"),
                            "--private_key", str(keys.private_key))
    assert res.returncode == 0, res.stderr
    reg = Registry(tmp_path / "repo", create=True)
    with pytest.raises(SignatureError):
        reg.import_signed("ext", artifacts, TrustPolicy.from_args(True, [other_keys.public_key]))
    assert reg.versions("ext") == []
    info = reg.import_signed("ext", artifacts, TrustPolicy.from_args(True, [keys.public_key]))
    assert info.signed and info.active
    assert [e["event"] for e in reg.audit.entries()][:1] == ["refuse"]
    assert main(["registry", "import", str(tmp_path / "repo"), "ext", str(artifacts),
                 "--public-key", str(other_keys.public_key)]) == 2


def test_encryption_at_rest_signed_over_ciphertext(tmp_path, artifacts, keys):
    key_file = write_new_key(tmp_path / "aes.key")
    key = load_key(key_file)
    reg = Registry(tmp_path / "repo", create=True)
    info = reg.publish("enc", artifacts, private_key=keys.private_key, encryption_key=key)
    assert "model.onnx.enc" in info.files and "model.onnx" not in info.files
    assert "model.onnx.json" in info.files  # sidecars stay readable
    assert is_encrypted(info.path / "model.onnx.enc")
    plain = (artifacts / "model.onnx").read_bytes()
    assert plain not in (info.path / "model.onnx.enc").read_bytes()
    policy = TrustPolicy.from_args(True, [keys.public_key])
    art = open_verified(info.path, policy, artifact="model.onnx", key=key)
    assert art.encrypted and art.data == plain
    onnx.load_from_string(art.data)  # decrypted in memory, parses
    with pytest.raises(InvalidInputError, match="encrypted"):
        open_verified(info.path, policy, artifact="model.onnx")
    with pytest.raises(ArtifactError, match="wrong key"):
        open_verified(info.path, policy, artifact="model.onnx", key=bytes(32))
    # a ciphertext renamed into another file's place fails authentication (name is the AAD)
    blob = (info.path / "model.onnx.enc").read_bytes()
    with pytest.raises(ArtifactError):
        decrypt_bytes(blob, key, "model.plan")
    os.environ["TRT_EDGE_TEST_KEY"] = key.hex()
    try:
        assert load_key(env="TRT_EDGE_TEST_KEY") == key
    finally:
        del os.environ["TRT_EDGE_TEST_KEY"]


_PUBLISHER = textwrap.dedent("""
    import sys
    from trt_edge.registry.store import Registry
    repo, src, key = sys.argv[1:4]
    print("start", flush=True)
    Registry(repo, create=True).publish("m", src, private_key=key, _pause_s=0.05)
    print("done", flush=True)
""")


def test_sigkill_mid_publish_leaves_repository_consistent(tmp_path, artifacts, keys):
    repo = tmp_path / "repo"
    reg = Registry(repo, create=True)
    reg.publish("m", artifacts, private_key=keys.private_key)  # version 1, active
    before = {p.name: p.read_bytes() for p in (repo / "m" / "1").iterdir()}
    policy = TrustPolicy.from_args(True, [keys.public_key])
    script = tmp_path / "publisher.py"
    script.write_text(_PUBLISHER)
    for delay in (0.05, 0.15, 0.3):
        proc = subprocess.Popen([sys.executable, str(script), str(repo), str(artifacts), str(keys.private_key)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "start"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        reg = Registry(repo)
        # every visible version is complete and verifies; the active one is untouched
        for v in reg.versions("m"):
            open_verified(v.path, policy)
        assert {p.name: p.read_bytes() for p in (repo / "m" / "1").iterdir()} == before
        assert reg.active_version("m") in {v.version for v in reg.versions("m")}
        assert verify_audit_log(reg.audit.path).ok
    reg.publish("m", artifacts, private_key=keys.private_key)  # cleans stale staging folders
    assert not [p for p in (repo / "m").iterdir() if p.name.startswith(".")]


def test_audit_log_detects_edit_reorder_delete_truncate(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(6):
        log.append("publish", model="m", version=i + 1)
    assert verify_audit_log(log.path).ok
    lines = log.path.read_text().splitlines()

    def check(new_lines, expect):
        p = tmp_path / f"case-{expect}.jsonl"
        p.write_text("\n".join(new_lines) + "\n")
        p.with_name(p.name + ".head").write_text(log.head_path.read_text())
        report = verify_audit_log(p)
        assert not report.ok and expect in report.describe(), report.describe()

    edited = list(lines)
    entry = json.loads(edited[2])
    entry["version"] = 99
    edited[2] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    check(edited, "edited")
    check([lines[0], lines[2], lines[1], *lines[3:]], "reordered")
    check([*lines[:3], *lines[4:]], "removed")
    check(lines[:-1], "cut off the end")
    assert main(["registry", "audit-verify", str(log.path)]) == 0


def test_build_verifies_a_signed_version_before_building(tmp_path, keys, other_keys):
    """`trt-edge build --require-signed` refuses an unsigned or tampered directory (exit 2) and
    builds from a verified one (ONNX Runtime fallback here)."""
    from .conftest import tiny_onnx

    pytest.importorskip("onnxruntime")
    src = tmp_path / "src"
    src.mkdir()
    onnx.save(tiny_onnx(), src / "model.onnx")
    reg = Registry(tmp_path / "repo", create=True)
    info = reg.publish("tiny", src, private_key=keys.private_key)
    out = tmp_path / "out" / "tiny.onnx"
    common = ["build", str(info.path / "model.onnx"), "-o", str(out), "--require-signed"]
    assert main([*common, "--trusted-key", str(other_keys.public_key)]) == 2 and not out.exists()
    assert main([*common, "--trusted-key", str(keys.public_key)]) == 0 and out.exists()
    unsigned = tmp_path / "unsigned"
    unsigned.mkdir()
    onnx.save(tiny_onnx(), unsigned / "model.onnx")
    assert main(["build", str(unsigned / "model.onnx"), "-o", str(tmp_path / "o2.onnx"), "--require-signed",
                 "--trusted-key", str(keys.public_key)]) == 2
