"""A small CNN for MNIST digits, and a seconds-budget trainer."""
from __future__ import annotations

import logging
import time

import numpy as np

from .._lazy import require
from ..data.mnist import MnistSplit

torch = require("torch", "the built-in PyTorch models")
nn = torch.nn

log = logging.getLogger(__name__)


class MnistCNN(nn.Module):
    """conv-bn-relu x2 + pool + residual-free head: small, but with the ops the
    graph passes and the INT8 path must handle (Conv, BatchNorm, pooling, Gemm)."""

    def __init__(self, channels: tuple[int, int] = (16, 32), hidden: int = 64, num_classes: int = 10):
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(inplace=True), nn.Dropout(0.1),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def train_mnist_cnn(split: MnistSplit, epochs: int = 2, seconds: float | None = None, batch_size: int = 64,
                    lr: float = 2e-3, seed: int = 0, threads: int = 1) -> MnistCNN:
    """Train for ``epochs`` epochs (about 2-4 s of CPU per epoch), stopping early once
    ``seconds`` of wall time are spent if a budget is given; returns the model in eval mode.

    Deterministic for a given seed when no time budget cuts it short (two epochs reach
    ~96-97% held-out accuracy): torch's deterministic algorithms, ``threads`` intra-op
    threads (fixed: a reduction split over another thread count sums in another order),
    seeded initialisation and shuffling. The process's torch settings are restored after.
    Across CPUs (AVX2 vs AVX-512 kernels) float results can still differ in the last bits,
    so tests compare INT8 with the same run's FP32, never with a fixed accuracy.
    """
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True)
    try:
        return _train(split, epochs, seconds, batch_size, lr, seed)
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)


def _train(split: MnistSplit, epochs: int, seconds: float | None, batch_size: int, lr: float,
           seed: int) -> MnistCNN:
    torch.manual_seed(seed)
    model = MnistCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    x = torch.from_numpy(split.x_train)
    y = torch.from_numpy(split.y_train)
    gen = torch.Generator().manual_seed(seed)
    deadline = time.perf_counter() + seconds if seconds is not None else float("inf")
    steps = 0
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            steps += 1
            if time.perf_counter() > deadline:
                break
        if time.perf_counter() > deadline:
            break
    model.eval()
    log.info("trained MnistCNN for %d steps (%d epochs started), last loss %.3f", steps, epoch + 1,
             float(loss.detach()))
    return model


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels))
