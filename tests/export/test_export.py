"""Export: ONNX vs torch on the same inputs at two batch sizes (and sequence lengths)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from trt_edge.artifacts import read_sidecar  # noqa: E402
from trt_edge.errors import ExportError, InvalidInputError, VerificationError  # noqa: E402
from trt_edge.export import ExportOptions, export_onnx, verification_feeds  # noqa: E402
from trt_edge.onnx_io import graph_inputs  # noqa: E402
from trt_edge.runtime import run_onnx  # noqa: E402
from trt_edge.numerics import FP32_EXPORT, compare_outputs  # noqa: E402


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_cnn_export_matches_torch_at_two_batch_sizes(exporter, mnist_model, mnist_split, tmp_path):
    x = torch.from_numpy(mnist_split.x_test[:4])
    res = export_onnx(mnist_model, x, tmp_path / "cnn.onnx",
                      ExportOptions(exporter=exporter, input_names=["input"], output_names=["logits"]))
    assert res.verified and len(res.verification) == 2
    assert {s["input"][0] for s, _ in res.verification} == {4, 6}
    (inp,) = graph_inputs(res.model)
    assert inp.name == "input" and isinstance(inp.shape[0], str)  # dynamic batch
    # Independent re-check on real digits at a third batch size.
    feed = {"input": mnist_split.x_test[:9]}
    with torch.no_grad():
        ref = {"logits": mnist_model(torch.from_numpy(feed["input"])).numpy()}
    report = compare_outputs(run_onnx(res.path, feed), ref, FP32_EXPORT, classifier=True)
    assert report.passed and report.outputs[0].top1_agreement == 1.0
    side = read_sidecar(res.path)
    assert side["kind"] == "onnx-export" and side["options"]["exporter"] == exporter
    assert side["verification"][0]["passed"] is True
    assert "torch" in side["tool_versions"]


@pytest.mark.parametrize("fixture", ["minilm_onnx", "minilm_dynamo_onnx"])
def test_minilm_export_dynamic_batch_and_sequence(fixture, request, minilm_bundle):
    path = request.getfixturevalue(fixture)
    model = onnx.load(str(path))
    specs = {s.name: s for s in graph_inputs(model)}
    assert set(specs) == {"input_ids", "attention_mask"}
    assert all(isinstance(d, str) for d in specs["input_ids"].shape)  # batch and sequence dynamic
    texts = ["The robot stopped at the door.", "Lidar returns were noisy in the rain today, very noisy.",
             "ok"]
    for max_len in (8, 24):
        feed = minilm_bundle.tokenize(texts, pad_to=max_len)
        with torch.no_grad():
            ref = minilm_bundle.module(*(torch.from_numpy(feed[k]) for k in ("input_ids", "attention_mask")))
        got = run_onnx(path, feed)["embeddings"]
        assert got.shape == (3, 384)
        report = compare_outputs({"e": got}, {"e": ref.numpy()}, FP32_EXPORT)
        assert report.passed, report.table()
    side = read_sidecar(path)
    assert side["dynamic_axes"]["input_ids"] == {"0": "batch", "1": "sequence"}
    assert len(side["verification"]) == 2


class _FrozenBatch(torch.nn.Module):
    """Tracing freezes ``float(x.shape[0])`` into a constant: a real export bug verification must catch."""

    def forward(self, x):
        return x * float(x.shape[0])


def test_verification_mismatch_raises_with_figures_and_writes_nothing(tmp_path):
    dest = tmp_path / "bad.onnx"
    with pytest.raises(VerificationError) as info:
        export_onnx(_FrozenBatch(), torch.ones(2, 3), dest, ExportOptions(exporter="torchscript"))
    assert "max_abs" in str(info.value) and info.value.report is not None
    assert not info.value.report.passed
    assert not dest.exists() and not list(tmp_path.iterdir())


def test_bad_arguments_are_clear(tmp_path):
    m = torch.nn.Linear(3, 2)
    with pytest.raises(InvalidInputError, match="sample_inputs"):
        export_onnx(m, np.ones((1, 3)), tmp_path / "m.onnx")
    with pytest.raises(InvalidInputError, match="2 input names for 1"):
        export_onnx(m, torch.ones(1, 3), tmp_path / "m.onnx", ExportOptions(input_names=["a", "b"]))
    with pytest.raises(InvalidInputError, match="exporter"):
        ExportOptions(exporter="tf2onnx")
    with pytest.raises(InvalidInputError, match="opset"):
        ExportOptions(opset=99)
    assert not (tmp_path / "m.onnx").exists()


def test_exporter_failure_is_an_export_error(tmp_path):
    class Unsupported(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eig(x)[0].real  # no ONNX symbolic for eig

    with pytest.raises(ExportError, match="exporter failed"):
        export_onnx(Unsupported(), torch.eye(3).unsqueeze(0), tmp_path / "e.onnx",
                    ExportOptions(exporter="torchscript"))
    assert not (tmp_path / "e.onnx").exists()


def test_external_data_and_opset(tmp_path):
    m = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU()).eval()
    res = export_onnx(m, torch.randn(2, 16), tmp_path / "ext.onnx",
                      ExportOptions(exporter="torchscript", external_data=True, opset=17))
    assert (tmp_path / "ext.onnx.data").exists()
    loaded = onnx.load(str(tmp_path / "ext.onnx"))
    assert any(o.domain in ("", "ai.onnx") and o.version == 17 for o in loaded.opset_import)
    assert res.verified


def test_verification_feeds_resize_real_rows():
    sample = {"ids": np.arange(12).reshape(2, 6), "x": np.ones((2, 3), np.float32)}
    feeds = verification_feeds(sample, {"ids": {0: "batch", 1: "sequence"}, "x": {0: "batch"}}, None)
    assert feeds[1]["ids"].shape == (4, 5) and feeds[1]["x"].shape == (4, 3)
    # rows are cycled copies of real rows, truncated along the sequence axis
    np.testing.assert_array_equal(feeds[1]["ids"][2], sample["ids"][0, :5])
    assert json.dumps({k: v.shape for k, v in feeds[1].items()})
