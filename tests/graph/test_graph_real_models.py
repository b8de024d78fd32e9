"""The default pipeline on real models (shared fixtures) and on files from other exporters.

Each model is optimized with its real inputs added to the verification feeds; the
result is then checked again here with ONNX Runtime at its *default* optimisation
level (how users run it) and, structurally, with the full ONNX checker.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from trt_edge.graph import OptimizeOptions, optimize
from trt_edge.graph.report import op_histogram
from trt_edge.numerics import FP32_EXACT, assert_close
from trt_edge.runtime.onnxrt import run_onnx


def _optimize_and_check(path_or_model, real_feeds):
    model = onnx.load(str(path_or_model)) if not isinstance(path_or_model, onnx.ModelProto) else path_or_model
    # One random feed (dynamic axes at 2, 3, ...) plus the real ones keeps the suite fast;
    # the default (two random feeds) is exercised by the hand-built models.
    out, report = optimize(model, OptimizeOptions(real_inputs=real_feeds, verify_dim_sizes=(2,)))
    assert report.verified and report.verification_feeds == 1 + len(real_feeds)
    assert report.nodes_after <= report.nodes_before
    onnx.checker.check_model(out, full_check=True)
    assert [o.name for o in out.graph.output] == [o.name for o in model.graph.output]
    assert [i.name for i in out.graph.input] == [i.name for i in model.graph.input
                                                 if i.name not in {t.name for t in model.graph.initializer}]
    for feed in real_feeds:  # ORT as deployed (its own optimizer on) agrees too
        assert_close(run_onnx(out, feed), run_onnx(model, feed), FP32_EXACT, "optimized vs original")
    return model, out, report


def _onnxslim_nodes(model: onnx.ModelProto) -> int:
    """The bar the issue sets: never more nodes than onnxslim on the same model."""
    onnxslim = pytest.importorskip("onnxslim")
    return sum(op_histogram(onnxslim.slim(model)).values())


def test_mnist_cnn(mnist_onnx, mnist_split):
    _, out, report = _optimize_and_check(mnist_onnx, [{"input": mnist_split.x_test[:16]}])
    assert "Constant" not in op_histogram(out)
    assert report.max_abs_error == 0.0   # nothing to reorder in this model: bit-exact


def test_mobilenet_v2(mobilenet_onnx, imagenet_photos):
    model, out, report = _optimize_and_check(mobilenet_onnx, [{"input": imagenet_photos[:2]}])
    before, after = op_histogram(model), op_histogram(out)
    assert after.get("Constant", 0) == 0 and before.get("Constant", 0) > 0   # Clip bounds folded
    assert after["Conv"] == before["Conv"] == 52
    assert report.nodes_after <= _onnxslim_nodes(model)


@pytest.fixture(scope="module")
def minilm_feed(minilm_bundle):
    from trt_edge.data.sentences import lee_documents
    # Sentences of different lengths: padding positions exercise the attention mask.
    docs = [d[:160] for d in lee_documents()[:3]] + ["A robot arm."]
    return minilm_bundle.tokenize(docs, max_length=48)


def test_minilm_torchscript_export(minilm_onnx, minilm_feed):
    assert minilm_feed["attention_mask"].min() == 0
    model, out, report = _optimize_and_check(minilm_onnx, [minilm_feed])
    before, after = op_histogram(model), op_histogram(out)
    assert after.get("Constant", 0) == 0
    assert after["Shape"] < before["Shape"] and after["Unsqueeze"] < before["Unsqueeze"]
    assert after["MatMul"] == before["MatMul"]   # 3-D activations: no Gemm rewrite
    assert report.nodes_after < 0.6 * report.nodes_before
    # Inferred shapes are not written: with them ORT fuses SkipLayerNormalization, slower on CPU.
    assert len(out.graph.value_info) == len(model.graph.value_info)
    assert report.nodes_after <= _onnxslim_nodes(model)
    assert next(p for p in report.passes if p.name == "unify_dynamic_dims").stats["unified"] > 0


def test_minilm_dynamo_export(minilm_dynamo_onnx, minilm_feed):
    model, out, report = _optimize_and_check(minilm_dynamo_onnx, [minilm_feed])
    # The dynamo exporter already folds and deduplicates; an Unsqueeze chain is what is left.
    assert report.nodes_after < report.nodes_before
    assert report.nodes_after <= _onnxslim_nodes(model)


def test_sklearn_mlp_from_skl2onnx():
    """Another exporter (skl2onnx): ai.onnx.ml ops survive; int64 labels identical on real digits."""
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    clf = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(32,), max_iter=60,
                                                        random_state=0)).fit(x[:1200], y[:1200])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = to_onnx(clf, x[:1], options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
    feed = {"X": x[1200:]}
    _, out, report = _optimize_and_check(model, [feed])
    after = op_histogram(out)
    assert after["ai.onnx.ml::Scaler"] == 1 and after["ai.onnx.ml::ArrayFeatureExtractor"] == 1
    assert "Identity" not in after
    got, ref = run_onnx(out, feed), run_onnx(model, feed)
    np.testing.assert_array_equal(got["label"], ref["label"])
    assert np.mean(got["label"] == y[1200:]) > 0.85   # a real classifier on held-out digits


def test_caffe2_inception_light():
    """onnx-caffe2 export (IR 3, opset 9, LRN, weights as ConstantOfShape) from the onnx package."""
    import importlib.util
    from pathlib import Path
    path = (Path(importlib.util.find_spec("onnx").origin).parent / "backend" / "test" / "data" / "light"
            / "light_inception_v1.onnx")
    feed = {"data_0": np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    model, out, report = _optimize_and_check(path, [feed])
    after = op_histogram(out)
    assert "ConstantOfShape" not in after and "Dropout" not in after
    assert after["LRN"] == op_histogram(model)["LRN"]
