"""Distillation, low-rank factorisation and weight sharing on the real MNIST CNN."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from trt_edge.compress._train import TrainOptions
from trt_edge.compress.distill import DistillOptions, distill, kd_loss
from trt_edge.compress.lowrank import LowRankOptions, factorize
from trt_edge.compress.report import count_params, export_verified
from trt_edge.compress.weight_sharing import (dense_fp32_bytes, finetune_codebooks, kmeans_1d, load_packed,
                                              pack_bits, save_packed, share_weights,
                                              unpack_bits, unpack_state)
from trt_edge.errors import ArtifactError, InvalidInputError
from trt_edge.models.mnist import MnistCNN

from compress_helpers import onnx_matches_torch


def test_kd_loss_is_zero_for_equal_logits_and_scales_with_t_squared():
    a = torch.randn(8, 10)
    assert float(kd_loss(a, a, 4.0)) == pytest.approx(0.0, abs=1e-6)
    b = torch.randn(8, 10)
    p, q = torch.softmax(b / 2, 1), torch.log_softmax(a / 2, 1)
    want = float((p * (torch.log(p) - q)).sum(1).mean()) * 4
    assert float(kd_loss(a, b, 2.0)) == pytest.approx(want, rel=1e-5)


def test_distilled_quarter_size_student_learns_from_teacher_deterministically(mnist, tmp_path):
    task, split, teacher, base = mnist
    torch.manual_seed(0)
    student = MnistCNN(channels=(8, 16), hidden=24)
    assert count_params(student) <= count_params(teacher) / 4
    untrained = task.metric(student)
    opts = DistillOptions(temperature=4.0, alpha=0.7, features=[("features.4", "features.4")],
                          train=TrainOptions(epochs=2, lr=3e-3))
    s2 = copy.deepcopy(student)
    distill(teacher, student, task.loader, opts)
    assert all(p.requires_grad for p in teacher.parameters()) and not teacher.training  # left as it was
    acc = task.metric(student)
    assert acc > untrained + 0.5 and acc >= base - 0.06, (acc, base)
    # same seed, same data: the same student, bit for bit (a short run)
    short = DistillOptions(train=TrainOptions(epochs=1, max_steps=3, lr=3e-3))
    a, b = copy.deepcopy(s2), copy.deepcopy(s2)
    distill(teacher, a, task.loader, short)
    distill(teacher, b, task.loader, short)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    export_verified(student, split.x_test[:2], tmp_path / "student.onnx")
    onnx_matches_torch(student, tmp_path / "student.onnx", split.x_test)
    with pytest.raises(InvalidInputError, match="feature pair"):
        distill(teacher, a, task.loader, DistillOptions(features=[("nope", "features.4")]))


def test_lowrank_reports_true_error_and_full_energy_is_lossless(baseline, tmp_path):
    task, split, model, base = baseline
    exact = copy.deepcopy(model)
    w = model.classifier[1].weight.detach().numpy().astype(np.float64)
    rows = factorize(model, LowRankOptions(energy=0.6, include=["classifier.1", "features.4"]))
    fc = next(r for r in rows if r.name == "classifier.1")
    assert fc.replaced and fc.rank < fc.full_rank and fc.params_after < fc.params_before
    a, b = model.classifier[1][1].weight.detach().double(), model.classifier[1][0].weight.detach().double()
    measured = np.linalg.norm(w - (a @ b).numpy()) / np.linalg.norm(w)
    assert fc.relative_error == pytest.approx(measured, rel=1e-4)
    s = np.linalg.svd(w, compute_uv=False)
    assert fc.relative_error == pytest.approx(np.sqrt((s[fc.rank:] ** 2).sum() / (s ** 2).sum()), rel=1e-4)
    conv = next(r for r in rows if r.name == "features.4")
    assert isinstance(model.features[4], torch.nn.Sequential) == conv.replaced
    assert count_params(model) < count_params(exact)
    export_verified(model, split.x_test[:2], tmp_path / "lowrank.onnx")
    onnx_matches_torch(model, tmp_path / "lowrank.onnx", split.x_test)
    # a rank that keeps all the energy reproduces the layer (param budget then forbids replacing)
    full = copy.deepcopy(exact)
    rep = factorize(full, LowRankOptions(energy=1.0, include=["classifier.1"]))
    assert rep[0].relative_error < 1e-6 and not rep[0].replaced   # full rank is not smaller: kept
    budget = factorize(copy.deepcopy(exact), LowRankOptions(energy=None, param_budget=0.25,
                                                            include=["classifier.1"]))
    assert budget[0].params_after <= 0.25 * budget[0].params_before


def test_bit_packing_round_trips_every_width():
    rng = np.random.default_rng()
    for bits in range(1, 9):
        n = int(rng.integers(1, 1000))
        idx = rng.integers(0, 1 << bits, n).astype(np.uint8)
        packed = pack_bits(idx, bits)
        assert len(packed) == -(-n * bits // 8)
        assert np.array_equal(unpack_bits(packed, bits, n), idx)
    with pytest.raises(InvalidInputError):
        pack_bits(np.array([4], np.uint8), 2)


def test_kmeans_1d_finds_the_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.01, 200) for c in (-1.0, 0.0, 0.5, 2.0)])
    book, idx = kmeans_1d(x, 4)
    assert np.allclose(np.sort(book), [-1.0, 0.0, 0.5, 2.0], atol=0.01)
    assert np.abs(book[idx] - x).max() < 0.06


def test_four_bit_sharing_fine_tunes_codebooks_packs_exactly_and_is_small(baseline, tmp_path):
    task, split, model, base = baseline
    layers = share_weights(model, bits=4)
    for l in layers:
        w = dict(model.named_modules())[l.name].weight.detach().numpy()
        assert len(np.unique(w)) <= 16
    before = [l.codebook.copy() for l in layers]
    finetune_codebooks(model, layers, task.loader, TrainOptions(epochs=1, lr=1e-4))
    assert any(not np.array_equal(b, l.codebook) for b, l in zip(before, layers))    # codebooks trained
    for l in layers:
        w = dict(model.named_modules())[l.name].weight.detach().numpy()
        assert np.array_equal(w, l.dense())   # indices kept: still exactly codebook[index]
    assert task.metric(model) >= base - 0.02
    path = save_packed(model, layers, tmp_path / "mnist.tews")
    data = path.read_bytes()
    assert dense_fp32_bytes(model) / len(data) >= 6.0
    state = unpack_state(data)
    for k, v in model.state_dict().items():
        assert np.array_equal(state[k], v.numpy()) and state[k].dtype == v.numpy().dtype, k   # bit exact
    fresh = load_packed(MnistCNN(), path).eval()
    np.testing.assert_array_equal(fresh(torch.from_numpy(split.x_test[:64])).detach().numpy(),
                                  model(torch.from_numpy(split.x_test[:64])).detach().numpy())
    export_verified(model, split.x_test[:2], tmp_path / "shared.onnx")
    onnx_matches_torch(model, tmp_path / "shared.onnx", split.x_test)
    with pytest.raises(ArtifactError, match="magic"):
        unpack_state(b"XXXX" + data[4:])
    with pytest.raises(ArtifactError):
        unpack_state(data[:-10])


def test_codebook_gradient_is_the_sum_of_shared_weight_gradients():
    from trt_edge.compress.weight_sharing import SharedLayer, _codebook_module
    idx = np.array([0, 1, 1, 2, 0, 3], np.uint8)
    layer = SharedLayer("w", (2, 3), 2, np.array([0.1, -0.2, 0.3, 0.4], np.float32), idx)
    mod = _codebook_module(layer)
    g = torch.randn(2, 3)
    (mod(None) * g).sum().backward()
    want = np.bincount(idx, weights=g.numpy().ravel(), minlength=4)
    np.testing.assert_allclose(mod.codebook.grad.numpy(), want, rtol=1e-6)
