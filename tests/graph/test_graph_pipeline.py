"""The pipeline's guarantees: a broken pass is caught and named, nothing half-written, report, CLI."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import graph_test_models as M
from trt_edge.artifacts import read_sidecar
from trt_edge.cli import main as cli_main
from trt_edge.errors import GraphPassError, InvalidInputError, VerificationError
from trt_edge.graph import OptimizeOptions, default_pipeline, optimize, optimize_file, registry
from trt_edge.graph.passes._common import is_constant


@pytest.fixture
def temporary_pass():
    """Register passes for one test only."""
    added: list[str] = []

    def add(name, fn):
        registry.register_pass(name, default=False)(fn)
        added.append(name)

    yield add
    for name in added:
        registry._REGISTRY.pop(name, None)


def _perturb_weights(graph, ctx):
    """Scales the first float constant by 1.001: a numerics bug."""
    for t in graph.tensors().values():
        if is_constant(t) and t.values.dtype == np.float32 and t.values.size > 1:
            t.values = t.values * np.float32(1.001)
            break
    return graph


def _dangling_input(graph, ctx):
    """Deletes a producer but keeps its consumers: a structural bug."""
    relu = next(n for n in graph.nodes if n.op == "Relu")
    graph.nodes.remove(relu)
    return graph


def test_numerical_bug_is_caught_and_named(tmp_path, temporary_pass):
    temporary_pass("test_perturb", _perturb_weights)
    src = tmp_path / "m.onnx"
    onnx.save(M.matmul_add_model(), src)
    dst = tmp_path / "out.onnx"
    with pytest.raises(VerificationError, match="test_perturb") as info:
        optimize_file(src, dst, OptimizeOptions(passes=["fuse_gemm", "test_perturb"]))
    assert info.value.report is not None and not info.value.report.passed
    assert not dst.exists() and not list(tmp_path.glob(".out.onnx*"))  # nothing half-written


def test_structural_bug_is_caught_and_named(temporary_pass):
    temporary_pass("test_dangling", _dangling_input)
    with pytest.raises(GraphPassError, match="test_dangling"):
        optimize(M.matmul_add_model(), OptimizeOptions(passes=["test_dangling"], verify=False))


def test_unknown_pass_and_bad_options():
    with pytest.raises(InvalidInputError, match="Available"):
        optimize(M.matmul_add_model(), OptimizeOptions(passes=["no_such_pass"]))
    with pytest.raises(InvalidInputError):
        OptimizeOptions(max_rounds=0)
    with pytest.raises(InvalidInputError):
        OptimizeOptions(verify_dim_sizes=(), real_inputs=())
    assert default_pipeline()[0] == "eliminate_identity" and default_pipeline()[-1] == "eliminate_dead"
    names = OptimizeOptions(skip=["fold_bn"]).pass_names()
    assert "fold_bn" not in names and "fuse_gemm" in names


def test_verification_uses_distinct_sizes_per_dynamic_axis():
    from trt_edge.graph.verify import build_verifier
    model = M.matmul_add_model(rank3=True)  # x[N, S, 16]
    v = build_verifier(model, dim_sizes=(2, 5), shapes={}, values={}, real_inputs=(), seed=0)
    assert [f["x"].shape for f in v.feeds] == [(2, 3, 16), (5, 6, 16)]


def test_optimize_file_writes_model_sidecar_and_report(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(M.noop_model(), src)
    dst = tmp_path / "sub" / "m.opt.onnx"
    report = optimize_file(src, dst)
    out = onnx.load(str(dst))
    onnx.checker.check_model(out, full_check=True)
    side = read_sidecar(dst)
    assert side["kind"] == "onnx.optimized"
    assert side["report"]["nodes_after"] == report.nodes_after == len(out.graph.node)
    assert side["sources"]["onnx"]["sha256"]
    assert side["options"]["verify"] is True
    table = report.table()
    assert "eliminate_identity" in table and "Identity" in table
    json.dumps(report.to_dict())
    with pytest.raises(InvalidInputError):
        optimize_file(src, src)


def test_cli_optimize(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(M.conv_bn_model(), src)
    dst = tmp_path / "m.opt.onnx"
    rj = tmp_path / "r.json"
    feed = tmp_path / "real.npz"
    np.savez(feed, x=np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32))
    rc = cli_main(["optimize", str(src), "-o", str(dst), "--skip", "fuse_gemm", "--inputs", str(feed),
                   "--report-json", str(rj)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "fold_bn" in printed and "BatchNormalization" in printed
    rep = json.loads(rj.read_text())
    assert rep["ops_after"].get("BatchNormalization", 0) == 0
    assert rep["verification_feeds"] == 1  # --inputs replace the generated feeds (issue 13)
    assert all(p["name"] != "fuse_gemm" for p in rep["passes"])
    assert cli_main(["optimize", "--list-passes"]) == 0
    assert "fold_constants" in capsys.readouterr().out
    assert cli_main(["optimize", str(src), "-o", str(tmp_path / "x.onnx"), "--passes", "nope"]) == 2
    assert not (tmp_path / "x.onnx").exists()
