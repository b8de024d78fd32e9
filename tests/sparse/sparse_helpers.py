"""Helpers shared by the sparse tests (imported by module name; unique across tests/)."""
from __future__ import annotations

import numpy as np


def random_sparse(rng: np.random.Generator, n: int, k: int, density: float,
                  dtype=np.float32, block: tuple[int, int] = (1, 1)) -> np.ndarray:
    """A random [n, k] matrix with about ``density`` non-zeros, in blocks of ``block``."""
    br, bc = block
    nbr, nbc = -(-n // br), -(-k // bc)
    keep = rng.random((nbr, nbc)) < density
    mask = np.repeat(np.repeat(keep, br, 0), bc, 1)[:n, :k]
    return (rng.standard_normal((n, k)) * mask).astype(dtype)
