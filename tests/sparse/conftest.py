"""Fixtures of the sparse tests: the op spec (csrc/sparse/spec) and the native library probe."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO / "csrc" / "sparse" / "spec" / "sparse_linear.json"


@pytest.fixture(scope="session")
def sparse_spec() -> dict:
    return json.loads(SPEC_PATH.read_text())


@pytest.fixture(scope="session")
def sparse_cpu():
    """The native CPU kernel module; the CPU tier requires it (pip install builds it)."""
    from trt_edge.sparse import cpu
    cpu.load_library()  # raises MissingDependencyError with the build command if missing
    return cpu


@pytest.fixture
def fresh_rng() -> np.random.Generator:
    # Fresh inputs on every run (TESTING.md); the seed is printed on failure via the id.
    seed = int(np.random.SeedSequence().entropy % (2**32))
    print(f"sparse test seed: {seed}")
    return np.random.default_rng(seed)
