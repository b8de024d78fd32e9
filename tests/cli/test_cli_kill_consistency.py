"""Kill `trt-edge optimize` and `trt-edge calibrate` (real processes) before each write step.

A step is every rename or removal the run makes (``os.replace``/``os.unlink``); the
driver kills its own process just before the N-th one, for every N the run has. The
outputs start as a complete older result made with other options, so a new file next
to an old one is visible. After every kill: each artifact is complete, a sidecar only
ever sits beside the artifact whose sha256 it records, and the TensorRT cache is always
the one the ranges beside it give. SIGTERM is handled like Ctrl-C (exit 130, no temp
file); the temp files a SIGKILL leaves are removed by the next run.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from cli_tiny_models import conv_classifier, save

pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[2]
TRT_VERSION = "10.3.0"

DRIVER = r'''
import atexit, os, signal, sys
from trt_edge.cli import main

kill_at = int(os.environ.get("KILL_AT", "0"))
sig = getattr(signal, os.environ.get("KILL_SIG", "SIGKILL"))
steps = [0]
def hooked(fn):
    def wrapper(*args, **kwargs):
        steps[0] += 1
        if steps[0] == kill_at:
            os.kill(os.getpid(), sig)
        return fn(*args, **kwargs)
    return wrapper
if os.environ.get("COUNT_FILE"):
    atexit.register(lambda: open(os.environ["COUNT_FILE"], "w").write(str(steps[0])))
os.replace = hooked(os.replace)
os.unlink = hooked(os.unlink)
sys.exit(main(sys.argv[1:]))
'''

COMMANDS = {
    "optimize": (["optimize", "m.onnx", "-o", "out.onnx", "--passes", "eliminate_identity"],
                 ["optimize", "m.onnx", "-o", "out.onnx", "--report-json", "report.json"]),
    "calibrate": (["calibrate", "m.onnx", "--data", "data.npz", "-o", "r.json", "--trt-cache", "r.cache",
                   "--method", "max", "--trt-version", TRT_VERSION],
                  ["calibrate", "m.onnx", "--data", "data.npz", "-o", "r.json", "--trt-cache", "r.cache",
                   "--method", "percentile", "--trt-version", TRT_VERSION]),
}


def _run(folder: Path, driver: Path, argv: list[str], kill_at: int = 0, sig: str = "SIGKILL",
         count_file: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "KILL_AT": str(kill_at), "KILL_SIG": sig, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if count_file:
        env["COUNT_FILE"] = str(count_file)
    return subprocess.run([sys.executable, str(driver), "-q", *argv], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def _check_consistent(folder: Path, artifacts: list[str]) -> None:
    for name in artifacts:
        art, side = folder / name, folder / (name + ".json")
        if side.exists():
            assert art.exists(), f"sidecar {side.name} without its artifact"
            meta = json.loads(side.read_text())
            assert meta["sha256"] == _sha(art), f"{side.name} describes another {name}"
        if art.exists():
            if name.endswith(".onnx"):
                onnx.checker.check_model(onnx.load(str(art)))
            elif name.endswith(".json"):
                json.loads(art.read_text())
    ranges, cache = folder / "r.json", folder / "r.cache"
    if ranges.exists() and cache.exists():
        from trt_edge.quant import CalibrationResult
        from trt_edge.quant.trt_cache import render_trt_cache

        expected = render_trt_cache(CalibrationResult.load(ranges), TRT_VERSION)
        assert cache.read_bytes() == expected, "the TensorRT cache beside r.json was made from other ranges"


@pytest.fixture(scope="module")
def setups(tmp_path_factory):
    """Per command: a folder holding the older complete result, and the number of write steps."""
    root = tmp_path_factory.mktemp("kill")
    driver = root / "driver.py"
    driver.write_text(DRIVER)
    out = {}
    for name, (old, new) in COMMANDS.items():
        folder = root / f"{name}-old"
        folder.mkdir()
        save(conv_classifier(), folder / "m.onnx")
        np.savez(folder / "data.npz", input=np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
        res = _run(folder, driver, old)
        assert res.returncode == 0, res.stderr
        probe = root / f"{name}-count"
        shutil.copytree(folder, probe)
        res = _run(probe, driver, new, count_file=root / f"{name}.count")
        assert res.returncode == 0, res.stderr
        out[name] = (folder, int((root / f"{name}.count").read_text()))
    return root, driver, out


@pytest.mark.parametrize("command,artifacts", [("optimize", ["out.onnx", "report.json"]),
                                               ("calibrate", ["r.json", "r.cache"])])
def test_a_kill_at_any_write_step_never_pairs_new_and_old(setups, command, artifacts):
    root, driver, found = setups
    old_state, steps = found[command]
    assert steps >= 3  # artifact + sidecar (+ report / cache): every one of them is a kill point
    old_files = {p.name: _sha(p) for p in old_state.iterdir()}
    runs = [(n, "SIGKILL") for n in range(1, steps + 1)] + [(1, "SIGTERM"), (steps, "SIGTERM")]

    def one(run: tuple[int, str]):
        n, sig = run
        folder = root / f"{command}-{sig}-{n}"
        shutil.copytree(old_state, folder)
        return folder, n, sig, _run(folder, driver, COMMANDS[command][1], kill_at=n, sig=sig)

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(one, runs))
    for folder, n, sig, res in results:
        where = f"{command} killed by {sig} before write step {n}/{steps}: {res.stderr[-1500:]}"
        assert "Traceback" not in res.stderr, where
        if sig == "SIGKILL":
            assert res.returncode == -signal.SIGKILL, where
        else:
            assert res.returncode == 130 and "interrupted" in res.stderr, where
            assert _temp_files(folder) == [], where
        _check_consistent(folder, artifacts)
        for name in ("m.onnx", "data.npz"):  # the inputs
            assert _sha(folder / name) == old_files[name], where
    # A SIGKILL just before a rename leaves a complete temp file: the next run removes it.
    killed = [f for f, n, sig, _ in results if sig == "SIGKILL" and _temp_files(f)]
    assert killed, "expected a killed run's temp file"
    folder = killed[0]
    res = _run(folder, driver, COMMANDS[command][1])
    assert res.returncode == 0, res.stderr
    assert _temp_files(folder) == []
    _check_consistent(folder, artifacts)
    assert all((folder / name).exists() for name in artifacts)


def test_outputs_follow_the_umask(tmp_path):
    from trt_edge.artifacts import atomic_write_text

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    (tmp_path / "a.txt").chmod(0o600)
    atomic_write_text(tmp_path / "a.txt", "y")  # replacing a file keeps its mode
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o600


def test_only_our_dead_temp_files_are_cleaned(tmp_path):
    from trt_edge.artifacts import atomic_write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".a.txt.trt-edge-{dead}-abcd1234.tmp"
    live = tmp_path / f".a.txt.trt-edge-{os.getppid()}-abcd1234.tmp"  # a running process
    foreign = tmp_path / ".a.txt.someone-else.tmp"
    for p in (stale, live, foreign):
        p.write_text("partial")
    atomic_write_text(tmp_path / "a.txt", "x")
    assert not stale.exists() and live.exists() and foreign.exists()
