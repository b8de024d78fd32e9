"""Helpers shared by the TFLite tests (a plain module: test files import it by name)."""
from __future__ import annotations

import numpy as np
import pytest

def photo(size: tuple[int, int], which: str = "astronaut") -> np.ndarray:
    """A real photo (scikit-image) as a 1xHxWx3 float32 image in [0, 1]."""
    skdata = pytest.importorskip("skimage.data")
    transform = pytest.importorskip("skimage.transform")
    img = getattr(skdata, which)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return transform.resize(img[..., :3] / 255.0, size).astype(np.float32)[None]


CALIBRATION_PHOTOS = ("astronaut", "chelsea", "rocket", "coffee")
