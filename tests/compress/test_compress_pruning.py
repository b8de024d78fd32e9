"""Structured (Torch-Pruning), unstructured-gradual and 2:4 pruning on the real MNIST CNN."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trt_edge.compress._train import TrainOptions, fine_tune
from trt_edge.compress.prune_structured import StructuredOptions, prune_structured
from trt_edge.compress.prune_unstructured import GradualSchedule, prune_gradual
from trt_edge.compress.report import export_verified
from trt_edge.compress.sparsity24 import (MaskKeeper, check_24_module, check_24_onnx, is_24, mask_24,
                                          prune_24, sparse_flag_warning)
from trt_edge.errors import InvalidInputError

from compress_helpers import onnx_matches_torch


def test_structured_pruning_halves_macs_removes_channels_and_exports(baseline, tmp_path):
    task, split, model, base = baseline
    sample = torch.from_numpy(split.x_test[:1])
    pruned, rep = prune_structured(model, sample, StructuredOptions(flops_reduction=0.5))
    assert 0.47 <= rep.flops_reduction <= 0.53
    assert rep.params_after < 0.7 * rep.params_before
    convs = {l.name: l for l in rep.layers}
    assert convs["features.0"].after < convs["features.0"].before        # channels physically gone
    assert convs["classifier.4"].after == convs["classifier.4"].before == 10  # output layer kept
    assert pruned.features[1].num_features == pruned.features[0].out_channels   # BN follows
    assert pruned.classifier[1].in_features == pruned.features[4].out_channels * 49  # Linear after Flatten
    fine_tune(pruned, task.loader, TrainOptions(epochs=2, lr=1e-3))
    assert task.metric(pruned) >= base - 0.03
    res = export_verified(pruned, split.x_test[:2], tmp_path / "pruned.onnx")
    assert res.verified
    onnx_matches_torch(pruned, tmp_path / "pruned.onnx", split.x_test)


def test_structured_pruning_taylor_needs_a_loss_and_uses_it(baseline):
    task, split, model, _ = baseline
    sample = torch.from_numpy(split.x_test[:1])
    with pytest.raises(InvalidInputError, match="loss_fn"):
        prune_structured(model, sample, StructuredOptions(importance="taylor"))
    x, y = torch.from_numpy(split.x_train[:128]), torch.from_numpy(split.y_train[:128])
    pruned, rep = prune_structured(model, sample, StructuredOptions(importance="taylor", flops_reduction=0.3),
                                   loss_fn=lambda m: torch.nn.functional.cross_entropy(m(x), y))
    assert 0.27 <= rep.flops_reduction <= 0.33
    l2, _ = prune_structured(model, sample, StructuredOptions(importance="l2", flops_reduction=0.3))
    # a different importance keeps different channels
    assert not torch.equal(pruned.features[0].weight[:4], l2.features[0].weight[:4]) or \
        pruned.features[0].out_channels != l2.features[0].out_channels


def test_gradual_global_pruning_reaches_sparsity_and_keeps_zeros(baseline):
    task, split, model, base = baseline
    sched = GradualSchedule(final_sparsity=0.8, steps=2)
    assert sched.sparsity_at(0) == 0.0 and abs(sched.sparsity_at(2) - 0.8) < 1e-12
    assert sched.sparsity_at(1) == pytest.approx(0.8 * (1 - 0.5 ** 3))
    reports = prune_gradual(model, task.loader, sched, train=TrainOptions(epochs=1, lr=1e-3))
    total = sum(r.shape[0] * int(np.prod(r.shape[1:])) for r in reports[-1])
    zeros = sum(r.sparsity_after * r.shape[0] * int(np.prod(r.shape[1:])) for r in reports[-1])
    assert zeros / total == pytest.approx(0.8, abs=0.01)   # global target over the pruned layers
    layer_sparsity = [r.sparsity_after for r in reports[-1]]
    assert max(layer_sparsity) - min(layer_sparsity) > 0.05  # global: layers differ
    w = model.classifier[1].weight.detach().numpy()
    assert 1 - np.count_nonzero(w) / w.size >= reports[-1][-2].sparsity_after - 1e-6  # zeros held
    assert task.metric(model) >= base - 0.05


def test_mask_24_uses_tensorrt_layout_on_conv_and_linear():
    rng = np.random.default_rng()
    w = rng.standard_normal((6, 10, 3, 3)).astype(np.float32)  # C=10: the last group is short
    keep = mask_24(w)
    for k in range(6):
        for r in range(3):
            for s in range(3):
                col = np.abs(w[k, :, r, s])
                for g in range(0, 10, 4):
                    grp = col[g:g + 4]
                    want = np.zeros(len(grp), bool)
                    want[np.argsort(-grp, kind="stable")[:2]] = True
                    assert np.array_equal(keep[k, g:g + 4, r, s], want)
    assert is_24(w * keep) and not is_24(w)
    lin = rng.standard_normal((5, 8)).astype(np.float32)
    assert is_24(lin * mask_24(lin))
    bad = np.zeros((1, 4), np.float32)
    bad[0, :3] = 1.0
    assert not is_24(bad) and is_24(bad.T.reshape(4, 1) * 0 + 1)  # C=1: one short group of one


def test_24_pruning_survives_fine_tuning_and_is_seen_in_onnx(baseline, tmp_path):
    task, split, model, base = baseline
    dense = export_verified(model, split.x_test[:2], tmp_path / "dense.onnx")
    assert sparse_flag_warning(dense.model) is not None and "none of the" in sparse_flag_warning(dense.model)
    masks = prune_24(model)
    assert "features.0" not in masks            # one input channel: not 2:4-able
    fine_tune(model, task.loader, TrainOptions(epochs=1, lr=1e-3), after_step=MaskKeeper(model, masks))
    rows = {r.name: r for r in check_24_module(model)}
    assert all(rows[n].is_24 for n in masks) and rows["features.4"].sparsity >= 0.5
    assert task.metric(model) >= base - 0.03
    sparse = export_verified(model, split.x_test[:2], tmp_path / "sparse24.onnx")
    onnx_rows = check_24_onnx(sparse.model)
    assert sum(r.is_24 for r in onnx_rows) == len(masks)   # BN-folded conv weights too
    assert sparse_flag_warning(sparse.model) is None
    onnx_matches_torch(model, tmp_path / "sparse24.onnx", split.x_test)
    # through Q/DQ: the int8 values behind DequantizeLinear are what TensorRT checks
    from trt_edge.compress.qat import ptq_qdq
    qdq = ptq_qdq(model, split.x_train[:64], tmp_path / "sparse24.int8.onnx")
    assert sum(r.is_24 for r in check_24_onnx(qdq)) == len(masks)


def test_reconstruction_pruning_beats_magnitude_before_fine_tuning_and_exports(baseline, tmp_path):
    task, split, model, base = baseline
    sample = torch.from_numpy(split.x_test[:1])
    calib = [torch.from_numpy(split.x_train[i:i + 128]) for i in range(0, 512, 128)]   # training digits
    with pytest.raises(InvalidInputError, match="calib"):
        prune_structured(model, sample, StructuredOptions(importance="reconstruction"))
    opts = dict(flops_reduction=0.5)
    rec, rep = prune_structured(model, sample, StructuredOptions(importance="reconstruction", **opts), calib=calib)
    l2, rep2 = prune_structured(model, sample, StructuredOptions(importance="l2", **opts))
    assert 0.47 <= rep.flops_reduction <= 0.53
    acc_rec, acc_l2 = task.metric(rec), task.metric(l2)
    # the refit next layers keep most of the accuracy without any training; magnitude does not
    assert acc_rec >= acc_l2 + 0.03 and acc_rec >= base - 0.10, (acc_rec, acc_l2, base)
    res = export_verified(rec, split.x_test[:2], tmp_path / "rec.onnx")
    assert res.verified
    onnx_matches_torch(rec, tmp_path / "rec.onnx", split.x_test)


def test_refit_is_exact_when_the_removed_channel_is_a_combination_of_kept_ones():
    import torch_pruning as tp
    from trt_edge.compress.prune_reconstruct import (ReconstructionImportance, collect_input_stats,
                                                     following_batchnorm, refit_before_prune)
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 6)
            self.b = torch.nn.Linear(6, 3)

        def forward(self, x):
            h = self.a(x)   # no activation: h's 6 channels live in a 4-D subspace (2 redundant)
            return self.b(h)

    net = Net().eval()
    x = torch.randn(256, 4)
    stats = collect_input_stats(net, [x])
    named = dict(net.named_modules())
    mod_stats = {named[k]: v for k, v in stats.items()}
    bns = following_batchnorm(net)
    assert bns == {}
    imp = ReconstructionImportance(mod_stats, bns, damp=0.0)
    dg = tp.DependencyGraph().build_dependency(net, example_inputs=x[:1])
    scores = imp(dg.get_pruning_group(net.a, tp.prune_linear_out_channels, idxs=list(range(6))))
    assert scores.shape == (6,) and float(scores.max()) < 1e-6     # each one removable without error
    group = dg.get_pruning_group(net.a, tp.prune_linear_out_channels, idxs=[1, 4])
    with torch.no_grad():
        y0 = net(x)
    finish = refit_before_prune(group, mod_stats, bns, damp=0.0)
    group.prune()
    finish()
    assert net.b.in_features == 4
    with torch.no_grad():
        assert torch.allclose(net(x), y0, atol=1e-4)
