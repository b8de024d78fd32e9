"""The sparsify graph pass and the ONNX Runtime host of SparseLinear, on synthetic graphs and on
pruned real models (MNIST CNN, MiniLM)."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from trt_edge.compress.pruning import PruneOptions, prune_module, prune_onnx
from trt_edge.graph.passes.sparsify import DOMAIN, SparsifyOptions, densify_model, sparsify_model
from trt_edge.graph.registry import default_pipeline, get_pass
from trt_edge.numerics import FP32_EXPORT, assert_close
from trt_edge.runtime.onnxrt import OrtOptions, run_onnx
from trt_edge.sparse import ort as sparse_ort

from sparse_helpers import random_sparse

pytest.importorskip("onnxruntime_extensions")

# The sparse kernels sum the non-zero products in another order than ORT's dense GEMM: the
# outputs differ by float32 rounding only. One layer: bounded by rtol 1e-5 / atol 1e-5 at
# these magnitudes (|y| ~ 1..30).
ONE_LAYER_RTOL, ONE_LAYER_ATOL = 1e-5, 1e-5


def _toy_model(rng, sparsity=0.85):
    """x[b,64] -> Gemm(transB=1,+bias) -> Relu -> MatMul(+Add bias) -> Gemm(dense, small)
    and a 3-D branch t[b,s,64] -> MatMul + Add (transformer-style)."""
    w1 = random_sparse(rng, 96, 64, 1 - sparsity)            # [out, in] (Gemm transB=1)
    w2 = random_sparse(rng, 80, 96, 1 - sparsity, block=(1, 4))  # MatMul B = w2.T
    w3 = rng.standard_normal((80, 40)).astype(np.float32)     # dense: stays a Gemm
    w4 = random_sparse(rng, 48, 64, 1 - sparsity, block=(4, 1))
    inits = [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(rng.standard_normal(96).astype(np.float32), "b1"),
             numpy_helper.from_array(np.ascontiguousarray(w2.T), "W2"),
             numpy_helper.from_array(rng.standard_normal(80).astype(np.float32), "b2"),
             numpy_helper.from_array(w3, "W3"), numpy_helper.from_array(np.ascontiguousarray(w4.T), "W4"),
             numpy_helper.from_array(rng.standard_normal((1, 1, 48)).astype(np.float32), "b4")]
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h1"], name="fc1", transB=1),
             helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
             helper.make_node("MatMul", ["r1", "W2"], ["m2"], name="fc2"),
             helper.make_node("Add", ["m2", "b2"], ["h2"], name="fc2_bias"),
             helper.make_node("Gemm", ["h2", "W3"], ["y"], name="head"),
             helper.make_node("MatMul", ["t", "W4"], ["m4"], name="proj"),
             helper.make_node("Add", ["b4", "m4"], ["z"], name="proj_bias")]
    f = onnx.TensorProto.FLOAT
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("x", f, ["b", 64]),
                                             helper.make_tensor_value_info("t", f, ["b", "s", 64])],
                              [helper.make_tensor_value_info("y", f, ["b", 40]),
                               helper.make_tensor_value_info("z", f, ["b", "s", 48])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _ops(model):
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("options", [SparsifyOptions(format="csr"),
                                     SparsifyOptions(format="bsr", block=(1, 4)),
                                     SparsifyOptions(format="auto", allow_dense=False)],
                         ids=["csr", "bsr1x4", "auto"])
def test_sparsify_rewrites_and_matches_dense(sparse_cpu, fresh_rng, options):
    model = _toy_model(fresh_rng)
    result = sparsify_model(model, options)
    sparse = result.model
    assert result.replaced == 3
    assert _ops(sparse).count("SparseLinear") == 3
    assert "MatMul" not in _ops(sparse) and "Add" not in _ops(sparse)  # biases fused
    assert _ops(sparse).count("Gemm") == 1  # the dense head is kept (dense fallback)
    assert all(n.domain == DOMAIN for n in sparse.graph.node if n.op_type == "SparseLinear")
    assert any(o.domain == DOMAIN for o in sparse.opset_import)
    head = next(entry for entry in result.layers if entry["node"] == "head")
    assert head["format"] == "dense" and head["reason"] == "below threshold"
    onnx.checker.check_model(sparse)
    for b, s in ((1, 1), (3, 5)):
        feed = {"x": fresh_rng.standard_normal((b, 64)).astype(np.float32),
                "t": fresh_rng.standard_normal((b, s, 64)).astype(np.float32)}
        ref = run_onnx(model, feed)
        got = dict(zip(["y", "z"], sparse_ort.make_session(sparse).run(["y", "z"], feed)))
        for name in ("y", "z"):
            np.testing.assert_allclose(got[name], ref[name], rtol=ONE_LAYER_RTOL, atol=ONE_LAYER_ATOL * 10)


def test_threshold_keeps_dense_layers(sparse_cpu, fresh_rng):
    model = _toy_model(fresh_rng, sparsity=0.3)
    result = sparsify_model(model, SparsifyOptions(threshold=0.5))
    assert result.replaced == 0
    assert "SparseLinear" not in _ops(result.model)
    assert {e["reason"] for e in result.layers} == {"below threshold"}


def test_densify_restores_the_exact_weights(sparse_cpu, fresh_rng):
    model = _toy_model(fresh_rng)
    dense_again = densify_model(sparsify_model(model, SparsifyOptions(format="bsr", block=(2, 2))).model)
    assert "SparseLinear" not in _ops(dense_again)
    onnx.checker.check_model(dense_again, full_check=True)
    feed = {"x": fresh_rng.standard_normal((2, 64)).astype(np.float32),
            "t": fresh_rng.standard_normal((2, 3, 64)).astype(np.float32)}
    ref, got = run_onnx(model, feed), run_onnx(dense_again, feed)
    for name in ("y", "z"):  # MatMul+Add vs Gemm: one rounding of the bias add
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-5)


def test_sparsify_model_verifies(sparse_cpu, fresh_rng, monkeypatch):
    from trt_edge.errors import VerificationError
    model = _toy_model(fresh_rng)
    feeds = [{"x": fresh_rng.standard_normal((2, 64)).astype(np.float32),
              "t": fresh_rng.standard_normal((2, 3, 64)).astype(np.float32)}]
    result = sparsify_model(model, SparsifyOptions(format="csr"), verify_feeds=feeds)
    assert result.verification and all(r.passed for r in result.verification)
    # Fault injection: a kernel that is off by 1e-3 must fail verification.
    real = sparse_ort.run_sparse_linear
    monkeypatch.setattr(sparse_ort, "run_sparse_linear", lambda x, w, b: real(x, w, b) + 1e-3)
    with pytest.raises(VerificationError, match="sparsified vs dense"):
        sparsify_model(model, SparsifyOptions(format="csr"), verify_feeds=feeds)


def test_pass_is_registered_opt_in():
    gpass = get_pass("sparsify")
    assert not gpass.default and "sparsify" not in default_pipeline()


def test_runner_hosts_sparse_model(sparse_cpu, fresh_rng):
    model = _toy_model(fresh_rng)
    sparse = sparsify_model(model, SparsifyOptions(format="csr")).model
    feed = {"x": fresh_rng.standard_normal((4, 64)).astype(np.float32),
            "t": fresh_rng.standard_normal((4, 2, 64)).astype(np.float32)}
    from trt_edge.runtime.sparse_ort import make_runner  # sparse/ does not import runtime/
    with make_runner(sparse, OrtOptions(graph_optimization="all")) as runner:
        got = runner.infer(feed)
    ref = run_onnx(model, feed)
    np.testing.assert_allclose(got["y"], ref["y"], rtol=ONE_LAYER_RTOL, atol=1e-4)


def test_pruned_mnist_cnn_end_to_end(sparse_cpu, mnist_model, mnist_split, tmp_path):
    torch = pytest.importorskip("torch")
    model = copy.deepcopy(mnist_model)  # the fixture is shared: prune a copy
    report = prune_module(model, PruneOptions(sparsity=0.9, layer_types=("Linear",)))
    assert all(abs(r.sparsity_after - 0.9) < 0.01 for r in report)
    x = mnist_split.x_test[:64]
    path = tmp_path / "mnist_pruned.onnx"
    torch.onnx.export(model, torch.from_numpy(x[:2]), str(path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}}, dynamo=False)
    dense = onnx.load(str(path))
    result = sparsify_model(dense, SparsifyOptions(threshold=0.8, allow_dense=False))
    assert result.replaced == 1  # classifier.1 (64x1568); the 10x64 head is too small
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x)).numpy()
    session = sparse_ort.make_session(result.model)
    for batch in (1, 64):
        ref = run_onnx(dense, {"input": x[:batch]})["logits"]
        got = session.run(["logits"], {"input": x[:batch]})[0]
        assert_close({"logits": got}, {"logits": ref}, FP32_EXPORT)
        np.testing.assert_allclose(got, torch_logits[:batch], rtol=1e-4, atol=1e-4)
        assert np.array_equal(got.argmax(1), ref.argmax(1))
    # All 1000 held-out digits: the sparse model classifies exactly like the dense pruned one.
    sparse_top1 = session.run(["logits"], {"input": mnist_split.x_test})[0].argmax(1)
    dense_top1 = run_onnx(dense, {"input": mnist_split.x_test})["logits"].argmax(1)
    assert np.mean(sparse_top1 == dense_top1) >= 0.999
    print(f"pruned MNIST CNN (90% of fc1): accuracy dense-pruned {np.mean(dense_top1 == mnist_split.y_test):.3f}, "
          f"sparse {np.mean(sparse_top1 == mnist_split.y_test):.3f}")


def test_pruned_minilm_end_to_end(sparse_cpu, minilm_onnx, minilm_bundle):
    dense, pruned = prune_onnx(onnx.load(str(minilm_onnx)), PruneOptions(sparsity=0.9, block=(1, 4)))
    assert len(pruned) >= 36  # 6 layers x (Q, K, V, O, FF1, FF2)
    assert all(abs(p.sparsity_after - 0.9) < 0.01 for p in pruned)
    result = sparsify_model(dense, SparsifyOptions(threshold=0.8, format="auto", allow_dense=False))
    assert result.replaced == len(pruned)
    # 1x4-pruned: block layouts are candidates (their blocks are full enough to be timed) on every
    # layer; which one wins is the machine's timing, not something a test can fix
    assert all(any(k.startswith("bsr") for k in e["timed_us"]) for e in result.layers), result.layers[0]
    assert all(e["format"] in ("csr", "bsr", "pcsr") for e in result.layers)
    feed = minilm_bundle.tokenize(["The robot stops at the red light.", "A drone lands on the pad.",
                                   "Battery low, returning to the charging dock now."])
    feed = {k: feed[k] for k in ("input_ids", "attention_mask")}
    ref = run_onnx(dense, feed)["embeddings"]
    got = sparse_ort.make_session(result.model).run(["embeddings"], feed)[0]
    # Six layers of reordered sums: export tolerance (rtol 1e-4 / atol 1e-5), not the one-layer one.
    assert_close({"embeddings": got}, {"embeddings": ref}, FP32_EXPORT)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert np.all(cos > 0.99999)
