"""trt_edge.bench.evaluate and `trt-edge eval`: metrics checked against scikit-learn and torch."""
from __future__ import annotations

import json

import numpy as np
import pytest

from trt_edge.bench import EvalOptions, classification_metrics, evaluate
from trt_edge.cli import main
from trt_edge.errors import InvalidInputError

from bench_tiny_models import linear_model


def test_metrics_match_scikit_learn(rng):
    metrics = pytest.importorskip("sklearn.metrics")
    y = rng.integers(0, 7, 500)
    scores = rng.standard_normal((500, 7)) + 2.0 * np.eye(7)[y]  # informative but imperfect
    scores[:, 6] -= 10  # class 6 is never predicted: precision 0 by convention
    m = classification_metrics(y, scores, top_k=3)
    pred = scores.argmax(1)
    p, r, f, s = metrics.precision_recall_fscore_support(y, pred, labels=range(7), zero_division=0)
    np.testing.assert_allclose([c.precision for c in m.per_class], p, rtol=1e-12)
    np.testing.assert_allclose([c.recall for c in m.per_class], r, rtol=1e-12)
    np.testing.assert_allclose([c.f1 for c in m.per_class], f, rtol=1e-12)
    assert [c.support for c in m.per_class] == list(s)
    assert m.accuracy == pytest.approx(metrics.accuracy_score(y, pred))
    assert m.macro_f1 == pytest.approx(metrics.f1_score(y, pred, average="macro", zero_division=0))
    assert m.weighted_f1 == pytest.approx(metrics.f1_score(y, pred, average="weighted", zero_division=0))
    assert m.top_k_accuracy == pytest.approx(metrics.top_k_accuracy_score(y, scores, k=3, labels=range(7)))
    np.testing.assert_array_equal(m.confusion_matrix, metrics.confusion_matrix(y, pred, labels=range(7)))


def test_mnist_accuracy_matches_torch(mnist_onnx, mnist_model, mnist_split, tmp_path):
    import torch
    x, y = mnist_split.x_test, mnist_split.y_test
    data = tmp_path / "mnist_test.npz"
    np.savez(data, x=x, y=y)
    res = evaluate(mnist_onnx, data, EvalOptions(batch_size=128, show_progress=False))
    with torch.inference_mode():
        torch_pred = mnist_model(torch.from_numpy(x)).argmax(1).numpy()
    assert res.metrics.num_samples == len(y)
    assert res.metrics.accuracy == pytest.approx(np.mean(torch_pred == y), abs=2 / len(y))
    # Far above chance (0.1); the fixture trains for a few CPU seconds, so the exact figure
    # depends on machine load - the check that matters is the agreement with torch above.
    assert res.metrics.accuracy > 0.3
    assert len(res.metrics.per_class) == 10 and sum(c.support for c in res.metrics.per_class) == len(y)
    assert res.metrics.top_k == 5 and res.metrics.top_k_accuracy >= res.metrics.accuracy
    other = evaluate(mnist_onnx, {"input": x[:300], "y": y[:300]}, EvalOptions(batch_size=7, show_progress=False))
    limited = evaluate(mnist_onnx, data, EvalOptions(batch_size=64, limit=300, show_progress=False))
    assert other.metrics.confusion_matrix == limited.metrics.confusion_matrix  # batching changes nothing


def test_fixed_batch_model_is_padded(rng):
    w, b = rng.standard_normal((5, 3)), rng.standard_normal(3)
    x = rng.standard_normal((10, 5)).astype(np.float32)
    y = (x @ w.astype(np.float32) + b.astype(np.float32)).argmax(1)
    res = evaluate(linear_model(w, b, batch=4), {"x": x, "y": y}, EvalOptions(show_progress=False))
    assert res.metrics.num_samples == 10 and res.metrics.accuracy == 1.0


def test_eval_errors(rng, tmp_path):
    model = linear_model(rng.standard_normal((5, 3)), rng.standard_normal(3))
    x = rng.standard_normal((6, 5)).astype(np.float32)
    with pytest.raises(InvalidInputError, match="'y'"):
        evaluate(model, {"x": x})
    with pytest.raises(InvalidInputError, match="rows"):
        evaluate(model, {"x": x, "y": np.zeros(5, np.int64)})
    with pytest.raises(InvalidInputError, match="not one of the model's outputs"):
        evaluate(model, {"x": x, "y": np.zeros(6, np.int64)}, EvalOptions(output="probs"))
    with pytest.raises(InvalidInputError, match="under the model's input names"):
        evaluate(model, {"features": x, "y": np.zeros(6, np.int64)})
    np.savez(tmp_path / "nolabels.npz", x=x)
    with pytest.raises(InvalidInputError, match="no 'y'"):
        evaluate(model, tmp_path / "nolabels.npz")


def test_cli_eval(mnist_onnx, mnist_split, tmp_path, capsys):
    data = tmp_path / "digits.npz"
    np.savez(data, input=mnist_split.x_test[:200], y=mnist_split.y_test[:200])
    out = tmp_path / "eval.json"
    assert main(["eval", str(mnist_onnx), "--data", str(data), "--batch-size", "50", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "confusion matrix" in text
    d = json.loads(out.read_text())
    assert d["metrics"]["num_samples"] == 200 and 0.3 < d["metrics"]["accuracy"] <= 1.0
    assert len(d["metrics"]["confusion_matrix"]) == 10 and d["backend"] == "onnxruntime"
    assert main(["eval", str(mnist_onnx), "--data", str(tmp_path / "none.npz")]) == 2
