"""Magnitude pruning (trt_edge.compress.pruning): exact targets, block structure, scopes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from trt_edge.compress.pruning import PruneOptions, magnitude_mask, prune_module, prune_onnx
from trt_edge.errors import InvalidInputError
from trt_edge.sparse.formats import sparsity
from trt_edge.sparse.select import block_fill


@pytest.mark.parametrize("block", [(1, 1), (1, 4), (4, 1), (4, 4)])
def test_mask_hits_target_and_keeps_largest_blocks(fresh_rng, block):
    w = fresh_rng.standard_normal((64, 96)).astype(np.float32)
    mask = magnitude_mask(w, 0.9, block)
    pruned = np.where(mask, w, 0)
    assert sparsity(pruned) == pytest.approx(0.9, abs=block[0] * block[1] / w.size)  # one block
    assert block_fill(pruned, block) == 1.0  # zeros come in whole blocks
    br, bc = block
    scores = np.abs(w).reshape(64 // br, br, 96 // bc, bc).mean(axis=(1, 3))
    kept = mask.reshape(64 // br, br, 96 // bc, bc)[:, 0, :, 0]
    assert scores[kept].min() >= scores[~kept].max()


def test_mask_handles_ragged_edges(fresh_rng):
    w = fresh_rng.standard_normal((10, 7)).astype(np.float32)
    mask = magnitude_mask(w, 0.5, (4, 4))
    assert mask.shape == w.shape and 0 < mask.sum() < w.size


def test_options_validate():
    with pytest.raises(InvalidInputError):
        PruneOptions(sparsity=1.0)
    with pytest.raises(InvalidInputError):
        PruneOptions(scope="model")
    with pytest.raises(InvalidInputError):
        PruneOptions(block=(0, 4))


def test_prune_module_layer_and_global(fresh_rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    with torch.no_grad():
        net[2].weight.mul_(10.0)  # the second layer matters more by magnitude
    bias_before = net[0].bias.detach().clone()
    report = prune_module(net, PruneOptions(sparsity=0.8, scope="global"))
    assert [r.name for r in report] == ["0", "2"]
    total = sum(r.sparsity_after * np.prod(r.shape) for r in report) / sum(np.prod(r.shape) for r in report)
    assert total == pytest.approx(0.8, abs=1e-3)
    assert report[0].sparsity_after > report[1].sparsity_after  # global: weaker layer loses more
    assert torch.equal(net[0].bias, bias_before)
    report = prune_module(net, PruneOptions(sparsity=0.9, scope="layer", include=r"^2$"))
    assert [r.name for r in report] == ["2"] and report[0].sparsity_after == pytest.approx(0.9, abs=1e-3)
    with pytest.raises(InvalidInputError, match="nothing to prune"):
        prune_module(net, PruneOptions(layer_types=("Conv2d",)))


def test_prune_onnx_blocks_in_weight_orientation(fresh_rng):
    b = fresh_rng.standard_normal((48, 32)).astype(np.float32)  # MatMul B [K=48, N=32] = W^T
    g = helper.make_graph([helper.make_node("MatMul", ["x", "B"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 48])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 32])],
                          [numpy_helper.from_array(b, "B")])
    model = helper.make_model(g)
    pruned, report = prune_onnx(model, PruneOptions(sparsity=0.75, block=(1, 4)))
    new_b = numpy_helper.to_array(pruned.graph.initializer[0])
    assert report[0].shape == (32, 48)
    assert sparsity(new_b) == pytest.approx(0.75, abs=1e-3)
    assert block_fill(new_b.T, (1, 4)) == 1.0  # 1x4 blocks along in_features of W
    assert np.array_equal(numpy_helper.to_array(model.graph.initializer[0]), b)  # input untouched
