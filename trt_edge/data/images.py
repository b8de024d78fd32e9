"""Real photos from scikit-image, preprocessed the ImageNet way."""
from __future__ import annotations

import numpy as np

from .._lazy import require

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "cat", "hubble_deep_field",
          "immunohistochemistry", "retina", "colorwheel", "logo", "page", "camera", "horse")


def preprocess(image: np.ndarray, size: int = 224, resize: int = 256) -> np.ndarray:
    """HWC image (uint8 or float, gray or RGB[A]) -> normalised float32 [3, size, size].

    Resize the short side to ``resize``, centre-crop ``size``, scale to [0, 1],
    normalise with ImageNet mean/std (torchvision's classification recipe).
    """
    transform = require("skimage.transform", "image preprocessing (pip install scikit-image)")
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3]
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    else:
        img = img.astype(np.float32)
        if img.max() > 1.0:
            img = img / 255.0
    h, w = img.shape[:2]
    scale = resize / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    img = transform.resize(img, (nh, nw), order=1, anti_aliasing=True, preserve_range=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    img = img[top:top + size, left:left + size]
    img = (img - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)


def imagenet_photos(names: tuple[str, ...] = PHOTOS) -> tuple[np.ndarray, list[str]]:
    """Preprocessed photos [N, 3, 224, 224] and their names (skipping any this skimage lacks)."""
    data = require("skimage.data", "the sample photos (pip install scikit-image)")
    batch, used = [], []
    for name in names:
        loader = getattr(data, name, None)
        if loader is None:
            continue
        batch.append(preprocess(loader()))
        used.append(name)
    return np.stack(batch), used
