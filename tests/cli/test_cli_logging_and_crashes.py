"""The CLI's top level: logging that leaves no trace, unexpected errors as one line, closed pipes."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_tiny_models import conv_classifier, save
from trt_edge.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def model(tmp_path) -> str:
    return save(conv_classifier(), tmp_path / "m.onnx")


def test_cli_run_leaves_the_package_logger_as_it_found_it(model, capsys, caplog):
    logger = logging.getLogger("trt_edge")
    before = (list(logger.handlers), logger.level, logger.propagate)
    assert main(["inspect", model, "--json", str(Path(model).with_suffix(".summary.json"))]) == 0
    assert "wrote" in capsys.readouterr().err  # the CLI's log went to the (captured) stderr
    assert (list(logger.handlers), logger.level, logger.propagate) == before
    # what broke before: a later log call wrote to the closed capture stream, and caplog saw nothing
    with caplog.at_level(logging.WARNING, logger="trt_edge"):
        logging.getLogger("trt_edge.quant").warning("after the CLI run")
    assert [r.getMessage() for r in caplog.records] == ["after the CLI run"]


def test_cli_log_follows_the_current_stderr(model, capsys):
    import contextlib
    import io

    first, second = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(first):
        assert main(["inspect", "missing.onnx"]) == 2
    with contextlib.redirect_stderr(second):
        assert main(["inspect", "missing-too.onnx"]) == 2
    assert "missing.onnx" in first.getvalue() and "missing.onnx" not in second.getvalue()
    assert "missing-too.onnx" in second.getvalue()


def test_unexpected_error_is_one_line_with_the_log_path(model, tmp_path, monkeypatch, capsys):
    import trt_edge.cli.inspect as inspect_cmd

    def broken(args):  # noqa: ANN001 - stands in for a bug in a command
        raise RuntimeError("internal invariant broken\nsecond line")

    monkeypatch.setattr(inspect_cmd, "run", broken)
    monkeypatch.setenv("TRT_EDGE_LOG_DIR", str(tmp_path / "logs"))
    assert main(["inspect", model]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "unexpected error: RuntimeError: internal invariant broken" in err and "please report it" in err
    logs = list((tmp_path / "logs").glob("trt-edge-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err
    text = logs[0].read_text()
    assert "Traceback" in text and "second line" in text and f"inspect {model}" in text


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_output_into_a_closed_pipe_is_quiet(model):
    """`trt-edge inspect m.onnx | head -0`: the reader is gone before we write."""
    proc = subprocess.Popen([sys.executable, "-m", "trt_edge", "inspect", model, "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), cwd=REPO)
    proc.stdout.close()  # closed long before the child has imported anything
    err = proc.stderr.read().decode()
    rc = proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert rc == 141, (rc, err)
