"""Fixtures of the TensorRT layer's tests (capability probes live in tests/conftest.py)."""
from __future__ import annotations

import sys
from typing import Any, Callable

import pytest

from fake_tensorrt import make_fake_tensorrt


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Install the labelled TEST DOUBLE as ``tensorrt`` for one test; returns a factory."""

    def install(**kwargs: Any) -> Any:
        mod = make_fake_tensorrt(**kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", mod)
        return mod

    return install
