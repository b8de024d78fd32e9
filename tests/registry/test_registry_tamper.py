"""Tampering: every change to a signed version is refused, naming the file, before anything loads."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from trt_edge.errors import SignatureError
from trt_edge.registry.loading import load_plugin_library, open_verified
from trt_edge.registry.policy import TrustPolicy, check_before_load
from trt_edge.registry.signing import sign_model

from .conftest import copy_tree

KINDS = ["model.onnx", "model.onnx.json", "model.plan", "model.plan.json", "ranges.json",
         "calibration.cache", "libplugin.so"]


@pytest.fixture()
def signed(tmp_path, artifacts, keys):
    sign_model(artifacts, private_key=keys.private_key)
    return artifacts


def _policy(keys) -> TrustPolicy:
    return TrustPolicy.from_args(True, [keys.public_key])


@pytest.mark.parametrize("name", KINDS)
def test_one_byte_changed_in_each_artifact_kind(signed, keys, name):
    p = signed / name
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match=f"Hash mismatch for '{name}'"):
        check_before_load(signed, _policy(keys))


def test_added_deleted_swapped_wrong_key_unsigned(tmp_path, signed, keys, other_keys, artifacts):
    added = copy_tree(signed, tmp_path / "added")
    (added / "evil.so").write_bytes(b"x")
    with pytest.raises(SignatureError, match="Extra files.*evil.so"):
        check_before_load(added, _policy(keys))

    deleted = copy_tree(signed, tmp_path / "deleted")
    (deleted / "ranges.json").unlink()
    with pytest.raises(SignatureError, match="Missing files.*ranges.json"):
        check_before_load(deleted, _policy(keys))

    # another version's file swapped in: a validly signed file, but not this version's
    v2 = copy_tree(signed, tmp_path / "v2")
    (v2 / "model.plan").write_bytes(b"\x00PLAN version 2")
    sign_model(v2, private_key=keys.private_key)
    swapped = copy_tree(signed, tmp_path / "swapped")
    shutil.copy(v2 / "model.plan", swapped / "model.plan")
    with pytest.raises(SignatureError, match="Hash mismatch for 'model.plan'"):
        check_before_load(swapped, _policy(keys))

    with pytest.raises(SignatureError, match="does not verify with any trusted anchor"):
        check_before_load(signed, TrustPolicy.from_args(True, [other_keys.public_key]))

    unsigned = tmp_path / "unsigned"
    shutil.copytree(artifacts, unsigned, ignore=shutil.ignore_patterns("model.sig"))
    with pytest.raises(SignatureError, match="not signed"):
        check_before_load(unsigned, _policy(keys))
    # without the policy an unsigned version loads (with a warning); a bad signature never does
    assert check_before_load(unsigned, TrustPolicy.from_args(False, [keys.public_key])) is None
    with pytest.raises(SignatureError):
        check_before_load(added, TrustPolicy.from_args(False, [keys.public_key]))


def test_open_verified_returns_the_verified_bytes(signed, keys):
    art = open_verified(signed, _policy(keys))
    assert art.name == "model.plan" and art.data == (signed / "model.plan").read_bytes()
    assert art.verification is not None and "model.plan" in art.verification.files


def _compile_marker_library(tmp: Path, marker: Path) -> Path:
    """A shared library whose constructor writes ``marker``: loading it runs code."""
    src = tmp / "plugin.c"
    src.write_text('#include <stdio.h>\n__attribute__((constructor)) static void on_load(void) {\n'
                   f'  FILE *f = fopen("{marker}", "w"); if (f) {{ fputs("loaded", f); fclose(f); }}\n}}\n')
    out = tmp / "libplugin.so"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the test plugin")
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(out), str(src)], check=True, capture_output=True)
    return out


def test_verification_happens_before_code_runs(tmp_path, artifacts, keys):
    marker = tmp_path / "constructor-ran"
    lib = _compile_marker_library(tmp_path, marker)
    shutil.copy(lib, artifacts / "libplugin.so")
    sign_model(artifacts, private_key=keys.private_key)

    # tampered: one byte of the sidecar changed -> the whole version is refused, the library never loads
    side = artifacts / "model.plan.json"
    side.write_text(side.read_text().replace("engine", "engina"))
    with pytest.raises(SignatureError, match="model.plan.json"):
        load_plugin_library(artifacts, _policy(keys), "libplugin.so")
    assert not marker.exists()

    # restored: now it verifies and loading runs the constructor
    side.write_text(side.read_text().replace("engina", "engine"))
    load_plugin_library(artifacts, _policy(keys), "libplugin.so")
    assert marker.read_text() == "loaded"
