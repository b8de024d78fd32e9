"""Every command, given a user's mistake: exit 2, no traceback, a message naming the fix, inputs untouched.

Each case runs ``trt_edge.cli.main`` in-process on a pristine copy of a folder of
tiny real models and data (tests/cli/cli_tiny_models.py) and checks afterwards that
every file that was there is byte-identical and that nothing was added (no output,
no temp file). The awkward-but-valid cases (static batch, float64 data, a 0-d input,
dynamic dims given by name) must succeed and leave the inputs alone too.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli_tiny_models import conv_classifier, empty_model, save, scalar_input_model, unknown_op_model
from trt_edge.cli import main

pytest.importorskip("onnxruntime")


def _write_inputs(d: Path) -> None:
    rng = np.random.default_rng(0)
    save(conv_classifier(), d / "m.onnx")
    save(conv_classifier(batch=1), d / "static.onnx")
    save(conv_classifier(height="h", width="w"), d / "dyn.onnx")
    save(scalar_input_model(), d / "scalar.onnx")
    save(empty_model(), d / "empty.onnx")
    save(unknown_op_model(), d / "unknown_op.onnx")
    shutil.copyfile(d / "m.onnx", d / os.fsdecode(b"caf\xe9.onnx"))  # a Latin-1 name: not UTF-8
    x = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    np.savez(d / "data.npz", input=x)
    np.savez(d / "data64.npz", input=x.astype(np.float64))
    np.savez(d / "dataint.npz", input=rng.integers(0, 5, (16, 3, 8, 8)))
    np.savez(d / "datarank.npz", input=x[:, :, :, 0])
    np.savez(d / "datachannels.npz", input=x[:, :1])
    np.savez(d / "datanan.npz", input=np.full_like(x, np.nan))
    np.savez(d / "labelled.npz", x=x, y=rng.integers(0, 5, 16))
    np.savez(d / "badlabels.npz", x=x, y=np.full(16, 7))
    (d / "zero.npz").write_bytes(b"")
    (d / "zero.onnx").write_bytes(b"")
    (d / "binary.json").write_bytes(bytes(range(256)))
    (d / "list.json").write_text("[1, 2, 3]")
    (d / "afile").write_text("a regular file")
    (d / "adir").mkdir()
    (d / "text.txt").write_bytes(b"caf\xe9 latin-1, not utf-8\n")
    (d / "sentences.txt").write_text("a sentence\nanother one\n", encoding="utf-8")
    (d / "factory.py").write_text(
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())\n"
        "def broken():\n"
        "    raise RuntimeError('the factory itself fails')\n")
    os.symlink("m.onnx", d / "alias.onnx")
    # ranges for m.onnx, plus damaged copies; an optimized model with its sidecar
    assert main(["-q", "calibrate", str(d / "m.onnx"), "--data", str(d / "data.npz"),
                 "-o", str(d / "ranges.json"), "--method", "max"]) == 0
    good = json.loads((d / "ranges.json").read_text())
    first = sorted(good["tensors"])[0]
    for tag, value in (("neg", -1.0), ("zero", 0.0), ("nan", float("nan")), ("inf", float("inf")),
                       ("huge", 1e30)):
        bad = json.loads(json.dumps(good))
        bad["tensors"][first]["amax"] = value
        (d / f"ranges_{tag}.json").write_text(json.dumps(bad))
    assert main(["-q", "optimize", str(d / "m.onnx"), "-o", str(d / "opt.onnx")]) == 0
    assert main(["-q", "quantize", str(d / "m.onnx"), "--ranges", str(d / "ranges.json"),
                 "-o", str(d / "int8.onnx")]) == 0


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pristine")
    _write_inputs(d)
    return d


def _snapshot(d: Path) -> dict[str, str]:
    out = {}
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _run(pristine: Path, tmp_path: Path, monkeypatch, capsys, argv: list[str]):
    work = tmp_path / "w"
    shutil.copytree(pristine, work, symlinks=True)
    os.link(work / "data.npz", work / "hardlink.npz")  # copytree does not keep hard links
    monkeypatch.chdir(work)
    monkeypatch.setenv("TRT_EDGE_LOG_DIR", str(tmp_path / "logs"))
    before = _snapshot(work)
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        rc = exc.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err, before, _snapshot(work)


# (id, argv, message regex). Every case must exit 2 and change nothing.
USER_ERRORS = [
    # 1. outputs over inputs (also through a symlink, ./ and a hard link) and over sidecars
    ("calibrate-o-model", "calibrate m.onnx --data data.npz -o m.onnx", r"-o 'm.onnx' would overwrite the input model"),
    ("calibrate-o-alias", "calibrate alias.onnx --data data.npz -o ./m.onnx", r"would overwrite the input model"),
    ("calibrate-o-data", "calibrate m.onnx --data data.npz -o data.npz", r"would overwrite the input --data"),
    ("calibrate-o-hardlink", "calibrate m.onnx --data data.npz -o hardlink.npz", r"would overwrite the input --data"),
    ("calibrate-o-sidecar", "calibrate opt.onnx --data data.npz -o opt.onnx.json", r"sidecar of the input model"),
    ("calibrate-cache-is-o", "calibrate m.onnx --data data.npz -o r.json --trt-cache r.json", r"same file as -o"),
    ("quantize-o-model", "quantize m.onnx --ranges ranges.json -o m.onnx", r"overwrite the input model"),
    ("quantize-o-ranges", "quantize m.onnx --ranges ranges.json -o ranges.json", r"overwrite the input --ranges"),
    ("quantize-o-data", "quantize m.onnx --ranges ranges.json -o data.npz --keep-worst 1 --data data.npz",
     r"overwrite the input --data"),
    ("export-o-factory", "export factory.py:build -o factory.py --shapes input:1x3x8x8", r"overwrite the input module file"),
    ("inspect-json-model", "inspect m.onnx --json m.onnx", r"--json 'm.onnx' would overwrite the input model"),
    ("bench-json-model", "bench m.onnx --json alias.onnx", r"would overwrite the input model"),
    ("bench-plot-inputs", "bench m.onnx --inputs data.npz --plot data.npz", r"overwrite the input --inputs"),
    ("eval-json-data", "eval m.onnx --data labelled.npz --json labelled.npz", r"overwrite the input --data"),
    ("compare-json-model", "compare m.onnx opt.onnx --json opt.onnx", r"overwrite the input model"),
    ("optimize-o-model", "optimize m.onnx -o ./m.onnx", r"overwrite the input model"),
    ("optimize-report-sidecar", "optimize m.onnx -o o.onnx --report-json o.onnx.json", r"same file as -o"),
    ("build-fallback-over-model", "build m.onnx -o m.plan", r"would overwrite the input model"),
    ("build-fallback-over-foreign", "build m.onnx -o static.plan", r"already exists and was not written by trt-edge"),
    # output folders that cannot hold a file
    ("calibrate-o-under-file", "calibrate m.onnx --data data.npz -o afile/r.json", r"under .*afile.*which is a file"),
    ("optimize-o-dir", "optimize m.onnx -o adir", r"is a directory"),
    ("inspect-json-under-file", "inspect m.onnx --json afile/x.json", r"which is a file"),
    ("quantize-plot-under-file", "quantize m.onnx --ranges ranges.json -o q.onnx --keep-worst 1 --data data.npz "
     "--sensitivity-plot afile/p.png", r"which is a file"),
    ("build-o-under-file", "build m.onnx -o afile/e.plan", r"which is a file"),
    # 2. damaged ranges
    ("ranges-neg", "quantize m.onnx --ranges ranges_neg.json -o q.onnx", r"amax -1\.0 \(must be finite and > 0\)"),
    ("ranges-zero", "quantize m.onnx --ranges ranges_zero.json -o q.onnx", r"amax 0\.0"),
    ("ranges-nan", "quantize m.onnx --ranges ranges_nan.json -o q.onnx", r"amax nan"),
    ("ranges-inf", "quantize m.onnx --ranges ranges_inf.json -o q.onnx", r"amax inf"),
    ("ranges-huge", "quantize m.onnx --ranges ranges_huge.json -o q.onnx", r"amax 1e\+30"),
    ("build-ranges-nan", "build m.onnx -o e.plan --precision int8 --ranges ranges_nan.json", r"amax nan"),
    ("ranges-list", "quantize m.onnx --ranges list.json -o q.onnx", r"holds a JSON list"),
    ("ranges-binary", "quantize m.onnx --ranges binary.json -o q.onnx", r"not a text file"),
    ("ranges-dir", "quantize m.onnx --ranges adir -o q.onnx", r"is a directory"),
    ("calibrate-all-nan", "calibrate m.onnx --data datanan.npz -o r.json", r"no finite value"),
    # 3. calibration data checked before the run (the runners' messages)
    ("calibrate-int64", "calibrate m.onnx --data dataint.npz -o r.json", r"dtype int64 but the model expects float32"),
    ("calibrate-rank", "calibrate m.onnx --data datarank.npz -o r.json", r"has 3 dimensions .* expects 4"),
    ("calibrate-channels", "calibrate m.onnx --data datachannels.npz -o r.json", r"axis 1 \(channels\) .* requires 3"),
    ("calibrate-image-size", "calibrate m.onnx --data adir -o r.json --image-size 0x0", r"--image-size must be at least"),
    ("calibrate-max-length", "calibrate m.onnx --data text.txt -o r.json --max-length 0", r"--max-length must be >= 1"),
    ("calibrate-mean", "calibrate m.onnx --data adir -o r.json --image-mean a,b", r"--image-mean must be comma-separated"),
    ("calibrate-mean-gray", "calibrate m.onnx --data adir -o r.json --grayscale", r"--grayscale: give one value"),
    ("keep-worst-int64", "quantize m.onnx --ranges ranges.json -o q.onnx --keep-worst 1 --data dataint.npz",
     r"dtype int64 but the model expects float32"),
    # 4. former tracebacks
    ("calibrate-zero-npz", "calibrate m.onnx --data zero.npz -o r.json", r"is empty \(0 bytes\)"),
    ("bench-zero-npz", "bench m.onnx --inputs zero.npz", r"Cannot read inputs from 'zero.npz'"),
    ("eval-zero-npz", "eval m.onnx --data zero.npz", r"Cannot read --data 'zero.npz'"),
    ("calibrate-empty-model", "calibrate empty.onnx --data data.npz -o r.json", r"has no inputs"),
    ("quantize-int8-again", "quantize int8.onnx --ranges ranges.json -o q.onnx --allow-stale-ranges",
     r"already INT8-quantized"),
    ("quantize-fp16-of-int8", "quantize int8.onnx --precision fp16 -o q.onnx", r"already INT8-quantized"),
    ("quantize-empty-model", "quantize empty.onnx --ranges ranges.json -o q.onnx", r"nothing to quantize"),
    ("calibrate-seed", "calibrate m.onnx --data data.npz -o r.json --seed -1", r"--seed must be >= 0"),
    ("bench-seed", "bench m.onnx --seed -1", r"--seed must be >= 0"),
    ("bench-negative-shape", "bench m.onnx --shapes input:-1x3x8x8", r"dimensions must be >= 0"),
    ("optimize-negative-shape", "optimize m.onnx -o o.onnx --shapes input:-1x3x8x8", r"dimensions must be >= 0"),
    ("export-zero-shape", "export factory.py:build -o e.onnx --shapes x:0x8", r"must be >= 1"),
    ("export-factory-raises", "export factory.py:broken -o e.onnx --shapes input:1x3x8x8",
     r"failed in your code: RuntimeError: the factory itself fails"),
    ("export-wrong-rank", "export factory.py:build -o e.onnx --shapes input:1x3 --exporter torchscript",
     r"Running .* on the sample inputs .* failed"),
    ("calibrate-text-not-utf8", "calibrate m.onnx --data text.txt -o r.json --tokenizer adir", r"not UTF-8 text"),
    ("calibrate-bad-tokenizer", "calibrate m.onnx --data sentences.txt -o r.json --tokenizer adir",
     r"--tokenizer 'adir' is not a usable Hugging Face tokenizer folder"),
    ("calibrate-unknown-op", "calibrate unknown_op.onnx --data data.npz -o r.json", r"uses Rleu, which is not"),
    ("bench-non-utf8-path", "bench " + os.fsdecode(b"caf\xe9.onnx"), r"is not valid UTF-8"),
    ("demo-epochs", "demo --epochs 0 --out d", r"--epochs must be >= 1"),
    ("demo-precision", "demo --precisions fp8 --out d", r"--precisions 'fp8'.*unknown fp8"),
    ("inspect-zero-bytes", "inspect zero.onnx", r"is empty \(0 bytes\)"),
    # 5. limits
    ("calibrate-num-bins", "calibrate m.onnx --data data.npz -o r.json --num-bins 1000000000", r"--num-bins must be between"),
    # 7. silently accepted input, conflicts, checks that used to come after the long work
    ("bench-unknown-shape-name", "bench m.onnx --shapes inptu:1x3x8x8", r"unknown inputs \['inptu'\]"),
    ("optimize-unknown-shape-name", "optimize m.onnx -o o.onnx --shapes inptu:1x3x8x8", r"unknown input\(s\) \['inptu'\]"),
    ("bench-unknown-dim", "bench dyn.onnx --dim hieght=8 --dim w=8", r"--dim names \['hieght'\]"),
    ("calibrate-unknown-input-name", "calibrate m.onnx --data data.npz -o r.json --input-name imput", r"\['imput'\]"),
    ("quantize-fp16-ranges", "quantize m.onnx --precision fp16 --ranges ranges.json -o q.onnx", r"--precision fp16 and --ranges"),
    ("build-fp16-ranges", "build m.onnx -o e.plan --precision fp16 --ranges ranges.json", r"--precision fp16 and --ranges"),
    ("build-cache-and-ranges", "build m.onnx -o e.plan --precision int8 --ranges ranges.json --calib-cache c.cache",
     r"--ranges and --calib-cache"),
    ("build-legacy-strong", "build m.onnx -o e.plan --precision int8 --calib-data data.npz --legacy-calibrator "
     "--strongly-typed", r"--legacy-calibrator and --strongly-typed"),
    ("bench-inputs-and-shapes", "bench m.onnx --inputs data.npz --shapes input:1x3x8x8", r"--inputs and --shapes"),
    ("optimize-verify-no-verify", "optimize m.onnx -o o.onnx --verify --no-verify", None),  # argparse: usage, exit 2
    ("quantize-keep-worst-negative", "quantize m.onnx --ranges ranges.json -o q.onnx --keep-worst -1 --data data.npz",
     r"--keep-worst must be >= 0"),
    ("compare-negative-rtol", "compare m.onnx opt.onnx --rtol -1 --atol 0", r"--rtol must be a finite number >= 0"),
    ("eval-label-out-of-range", "eval m.onnx --data badlabels.npz", r"label 7 is out of range.*5 classes"),
    ("calibrate-trt-version", "calibrate m.onnx --data data.npz -o r.json --trt-cache c.cache --trt-version banana",
     r"Cannot parse TensorRT version 'banana'"),
    # 9. bench refuses to guess dynamic dims
    ("bench-dynamic-dims", "bench dyn.onnx", r"dynamic dimension on axis 2 .* --shapes input:1x3xNxN"),
]


@pytest.mark.parametrize("argv,message", [pytest.param(a, m, id=i) for i, a, m in USER_ERRORS])
def test_user_error_exits_2_with_a_message_and_touches_nothing(pristine, tmp_path, monkeypatch, capsys, argv, message):
    rc, out, err, before, after = _run(pristine, tmp_path, monkeypatch, capsys, argv.split())
    assert rc == 2, (rc, err[-2000:])
    assert "Traceback" not in err and "Traceback" not in out, err
    if message is None:
        assert "error:" in err  # argparse's usage message
    else:
        import re
        assert re.search(message, err), err[-2000:]
        assert "unexpected error" not in err
    assert after == before, sorted(set(after.items()) ^ set(before.items()))
    assert not (tmp_path / "logs").exists()


# Awkward but valid: must succeed, leave every input byte-identical and no temp file.
VALID = [
    ("calibrate-static-batch", "calibrate static.onnx --data data.npz -o r.json", ["r.json", "r.json.json"]),
    ("calibrate-float64", "calibrate m.onnx --data data64.npz -o r.json --trt-cache r.cache",
     ["r.json", "r.json.json", "r.cache", "r.cache.json"]),
    ("keep-worst-float64", "quantize m.onnx --ranges ranges.json -o q.onnx --keep-worst 1 --data data64.npz",
     ["q.onnx", "q.onnx.json"]),
    ("bench-scalar-input", "bench scalar.onnx --iterations 3 --warmup 1", []),
    ("bench-dynamic-dims-given", "bench dyn.onnx --dim h=8 --dim w=8 --iterations 3 --warmup 1 --json b.json", ["b.json"]),
    ("build-fallback-artifact", "build opt.onnx -o built.plan", ["built.onnx", "built.onnx.json"]),
]


@pytest.mark.parametrize("argv,new_files", [pytest.param(a, f, id=i) for i, a, f in VALID])
def test_awkward_but_valid_input_succeeds(pristine, tmp_path, monkeypatch, capsys, argv, new_files):
    rc, out, err, before, after = _run(pristine, tmp_path, monkeypatch, capsys, argv.split())
    assert rc == 0, err[-2000:]
    assert "Traceback" not in err
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(set(after) - set(before)) == sorted(new_files)
    if "float64" in argv:
        assert "casting it to the model's float32" in err
    if argv.startswith("bench"):
        assert "inputs " in out  # the shapes it ran are printed
    if "dyn.onnx" in argv:
        assert "input(1, 3, 8, 8)" in out


def test_build_twice_replaces_only_its_own_fallback(pristine, tmp_path, monkeypatch, capsys):
    rc, _, err, before, after = _run(pristine, tmp_path, monkeypatch, capsys, "build m.onnx -o e.plan".split())
    assert rc == 0, err
    assert main("build m.onnx -o e.plan".split()) == 0  # e.onnx has our sidecar: replaced
    assert "not written by trt-edge" not in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_output_folder_is_refused_before_the_work(pristine, tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc, _, err, before, after = _run(pristine, tmp_path, monkeypatch, capsys,
                                         ["calibrate", "m.onnx", "--data", "data.npz", "-o", str(ro / "r.json")])
    finally:
        ro.chmod(0o755)
    assert rc == 2 and "is not writable" in err and "Traceback" not in err
    assert after == before and not any(ro.iterdir())


def test_inspect_says_a_damaged_engine_sidecar_is_damaged_not_missing(tmp_path, capsys):
    plan = tmp_path / "e.plan"
    plan.write_bytes(b"not an engine")
    (tmp_path / "e.plan.json").write_text("{not json")
    assert main(["inspect", str(plan)]) == 0
    out = capsys.readouterr().out
    assert "sidecar     unusable: Sidecar '" in out and "e.plan.json' is not valid JSON" in out
    assert "missing" not in out
