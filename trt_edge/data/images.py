"""Real photos from scikit-image, preprocessed the ImageNet way."""
from __future__ import annotations

import numpy as np

from .._lazy import require

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "cat", "hubble_deep_field",
          "immunohistochemistry", "retina", "colorwheel", "logo", "page", "camera", "horse")


def _rgb01_short_side(image: np.ndarray, resize: int, at_least: int) -> np.ndarray:
    """HWC image (uint8 or float, gray or RGB[A]) -> float32 RGB in [0, 1], the short side
    resized to ``resize`` (neither side below ``at_least``)."""
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
    nh, nw = max(at_least, round(h * scale)), max(at_least, round(w * scale))
    return transform.resize(img, (nh, nw), order=1, anti_aliasing=True, preserve_range=True)


def _normalised_chw(img: np.ndarray) -> np.ndarray:
    img = (img - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)


def preprocess(image: np.ndarray, size: int = 224, resize: int = 256) -> np.ndarray:
    """HWC image (uint8 or float, gray or RGB[A]) -> normalised float32 [3, size, size].

    Resize the short side to ``resize``, centre-crop ``size``, scale to [0, 1],
    normalise with ImageNet mean/std (torchvision's classification recipe).
    """
    img = _rgb01_short_side(image, resize, size)
    nh, nw = img.shape[:2]
    top, left = (nh - size) // 2, (nw - size) // 2
    return _normalised_chw(img[top:top + size, left:left + size])


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


# Disjoint photo sets for INT8 work: calibrate on the first, measure on the second (held out).
# (``cat`` is the same photo as ``chelsea``, so it is in neither.)
CALIBRATION_PHOTOS = ("chelsea", "coffee", "rocket", "immunohistochemistry", "camera", "brick", "coins")
HELD_OUT_PHOTOS = ("astronaut", "stereo_motorcycle", "hubble_deep_field", "retina", "colorwheel", "logo",
                   "page", "clock", "grass", "gravel", "moon", "horse", "text")


def _load_photo(data, name: str) -> np.ndarray | None:  # noqa: ANN001 - skimage.data module
    loader = getattr(data, name, None)
    if loader is None:
        return None
    try:
        img = loader()
    except Exception:  # noqa: BLE001 - a photo this skimage would download: skip it
        return None
    if isinstance(img, tuple):  # stereo pairs: the left image
        img = img[0]
    return np.asarray(img)


def photo_crops(names: tuple[str, ...], per_photo: int, seed: int = 0, size: int = 224) -> tuple[np.ndarray, list[str]]:
    """``per_photo`` random crops of each photo, preprocessed like :func:`preprocess`: the short side
    resized to a random 224-384 px, a random ``size`` crop, a random mirror. Deterministic for a seed;
    returns ``[N, 3, size, size]`` and the source photo of each crop (photos skimage lacks are skipped)."""
    data = require("skimage.data", "the sample photos (pip install scikit-image)")
    rng = np.random.default_rng(seed)
    crops, sources = [], []
    for name in names:
        img = _load_photo(data, name)
        if img is None:
            continue
        for _ in range(per_photo):
            resize = int(rng.integers(size, int(size * 1.7) + 1))
            full = preprocess_uncropped(img, resize)
            top = int(rng.integers(0, full.shape[1] - size + 1))
            left = int(rng.integers(0, full.shape[2] - size + 1))
            crop = full[:, top:top + size, left:left + size]
            if rng.random() < 0.5:
                crop = crop[:, :, ::-1]
            crops.append(np.ascontiguousarray(crop))
            sources.append(name)
    return np.stack(crops).astype(np.float32), sources


def preprocess_uncropped(image: np.ndarray, resize: int) -> np.ndarray:
    """HWC image -> normalised float32 [3, H', W'] with the short side resized to ``resize``."""
    return _normalised_chw(_rgb01_short_side(image, resize, resize))
