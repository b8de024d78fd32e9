"""Calibration data readers: each is an iterable of ``{input_name: np.ndarray}`` batches.

Every reader batches, honours a sample limit (``max_samples``) and a fixed
``seed`` (for shuffling), and is re-iterable: iterating twice yields the same
batches, which the legacy TensorRT calibrator and sensitivity analysis need.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import InvalidInputError, MissingDependencyError

Feed = dict[str, np.ndarray]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def _pil_image() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependencyError("Reading calibration images needs Pillow: pip install pillow "
                                     f"(it comes with matplotlib). Original error: {exc}") from exc
    return Image


def _check_limits(batch_size: int, max_samples: int | None) -> None:
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}.")
    if max_samples is not None and max_samples < 1:
        raise InvalidInputError(f"max_samples must be >= 1 (or None for all), got {max_samples}.")


class CalibrationReader:
    """Base: subclasses give ``num_samples`` and ``_load(indices) -> Feed``."""

    def __init__(self, batch_size: int = 32, max_samples: int | None = None, seed: int | None = 0,
                 shuffle: bool = False) -> None:
        _check_limits(batch_size, max_samples)
        self.batch_size = batch_size
        self.max_samples = max_samples
        self.seed = seed
        self.shuffle = shuffle

    @property
    def num_samples(self) -> int:
        raise NotImplementedError

    def _load(self, indices: np.ndarray) -> Feed:
        raise NotImplementedError

    def _order(self) -> np.ndarray:
        order = np.arange(self.num_samples)
        if self.shuffle:
            np.random.default_rng(self.seed).shuffle(order)
        if self.max_samples is not None:
            order = order[: self.max_samples]
        return order

    def __len__(self) -> int:
        n = len(self._order())
        return (n + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[Feed]:
        order = self._order()
        for start in range(0, len(order), self.batch_size):
            yield self._load(order[start:start + self.batch_size])


class NumpyReader(CalibrationReader):
    """Arrays in memory or in a ``.npz``/``.npy`` file.

    ``data``: ``{input_name: array}`` (all with the same first dimension), a single
    array (then ``input_name`` is required) or a path. ``dtypes`` optionally casts
    per input (e.g. ``{"input_ids": np.int64}``).
    """

    def __init__(self, data: Mapping[str, np.ndarray] | np.ndarray | str | os.PathLike[str],
                 input_name: str | None = None, batch_size: int = 32, max_samples: int | None = None,
                 seed: int | None = 0, shuffle: bool = False,
                 dtypes: Mapping[str, Any] | None = None) -> None:
        super().__init__(batch_size, max_samples, seed, shuffle)
        if isinstance(data, (str, os.PathLike)):
            p = Path(data)
            if not p.exists():
                raise InvalidInputError(f"Calibration data '{p}' does not exist.")
            loaded = np.load(p, allow_pickle=False)
            data = loaded if isinstance(loaded, np.ndarray) else {k: loaded[k] for k in loaded.files}
        if isinstance(data, np.ndarray):
            if not input_name:
                raise InvalidInputError("A single calibration array needs input_name= (the model input "
                                        "it feeds); or pass {name: array} / an .npz keyed by input name.")
            data = {input_name: data}
        self.arrays = {k: np.asarray(v) for k, v in data.items()}
        if dtypes:
            self.arrays = {k: v.astype(dtypes.get(k, v.dtype)) for k, v in self.arrays.items()}
        if not self.arrays:
            raise InvalidInputError("Calibration data is empty.")
        sizes = {k: v.shape[0] if v.ndim else 0 for k, v in self.arrays.items()}
        if len(set(sizes.values())) != 1 or 0 in sizes.values():
            raise InvalidInputError(f"Calibration arrays must share a non-empty first (sample) dimension, "
                                    f"got {sizes}.")
        self._n = next(iter(sizes.values()))

    @property
    def num_samples(self) -> int:
        return self._n

    def _load(self, indices: np.ndarray) -> Feed:
        return {k: np.ascontiguousarray(v[indices]) for k, v in self.arrays.items()}


@dataclasses.dataclass
class ImagePreprocess:
    """How an image file becomes a model input.

    Resize the shorter side to ``resize`` (if set), centre-crop to ``size``
    (height, width), scale to [0, 1], normalise with ``mean``/``std`` per channel,
    lay out as ``layout`` ("NCHW" or "NHWC"). ``grayscale`` gives one channel.
    """

    size: tuple[int, int] = (224, 224)
    resize: int | None = 256
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    layout: str = "NCHW"
    grayscale: bool = False
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.layout not in ("NCHW", "NHWC"):
            raise InvalidInputError(f"layout must be NCHW or NHWC, got {self.layout!r}.")
        channels = 1 if self.grayscale else 3
        if len(self.mean) not in (1, channels) or len(self.std) not in (1, channels):
            raise InvalidInputError(f"mean/std need 1 or {channels} values for "
                                    f"{'grayscale' if self.grayscale else 'RGB'} images.")
        if any(s <= 0 for s in self.std):
            raise InvalidInputError("std values must be > 0.")

    def apply(self, image: Any) -> np.ndarray:
        """PIL image -> float array (C, H, W) or (H, W, C)."""
        pil = _pil_image()
        img = image.convert("L" if self.grayscale else "RGB")
        h, w = self.size
        if self.resize:
            scale = self.resize / min(img.size)
            img = img.resize((max(w, round(img.size[0] * scale)), max(h, round(img.size[1] * scale))),
                             pil.BILINEAR)
        left = max(0, (img.size[0] - w) // 2)
        top = max(0, (img.size[1] - h) // 2)
        img = img.crop((left, top, left + w, top + h))
        arr = np.asarray(img, dtype=np.float32) / 255.0
        if arr.ndim == 2:
            arr = arr[:, :, None]
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            arr = arr.transpose(2, 0, 1)
        return np.ascontiguousarray(arr.astype(self.dtype))


class ImageFolderReader(CalibrationReader):
    """Every image under a folder (recursively, sorted by path), preprocessed by ``preprocess``."""

    def __init__(self, folder: str | os.PathLike[str], input_name: str,
                 preprocess: ImagePreprocess | None = None, batch_size: int = 32,
                 max_samples: int | None = None, seed: int | None = 0, shuffle: bool = True) -> None:
        super().__init__(batch_size, max_samples, seed, shuffle)
        root = Path(folder)
        if not root.is_dir():
            raise InvalidInputError(f"Image folder '{root}' does not exist or is not a folder.")
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise InvalidInputError(f"No images ({', '.join(IMAGE_SUFFIXES)}) under '{root}'.")
        self.input_name = input_name
        self.preprocess = preprocess or ImagePreprocess()

    @property
    def num_samples(self) -> int:
        return len(self.files)

    def _load(self, indices: np.ndarray) -> Feed:
        pil = _pil_image()
        batch = []
        for i in indices:
            try:
                with pil.open(self.files[int(i)]) as img:
                    batch.append(self.preprocess.apply(img))
            except OSError as exc:
                raise InvalidInputError(f"Cannot read image '{self.files[int(i)]}': {exc}") from exc
        return {self.input_name: np.stack(batch)}


class TorchDataLoaderReader:
    """Adapts a ``torch.utils.data.DataLoader`` (batching and shuffling are the loader's).

    Each loader item may be a tensor, a tuple/list (``input_names`` name its
    leading elements, extra elements such as labels are dropped) or a dict
    (keys are kept where they are in ``input_names``). ``max_samples`` stops early.
    """

    def __init__(self, loader: Iterable[Any], input_names: Sequence[str],
                 max_samples: int | None = None) -> None:
        _check_limits(1, max_samples)
        if not input_names:
            raise InvalidInputError("TorchDataLoaderReader needs input_names (the model's inputs).")
        self.loader = loader
        self.input_names = list(input_names)
        self.max_samples = max_samples

    @staticmethod
    def _to_numpy(x: Any) -> np.ndarray:
        if hasattr(x, "detach"):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def __iter__(self) -> Iterator[Feed]:
        seen = 0
        for item in self.loader:
            if isinstance(item, Mapping):
                feed = {k: self._to_numpy(item[k]) for k in self.input_names if k in item}
            elif isinstance(item, (tuple, list)):
                feed = {k: self._to_numpy(v) for k, v in zip(self.input_names, item)}
            else:
                feed = {self.input_names[0]: self._to_numpy(item)}
            n = next(iter(feed.values())).shape[0]
            if self.max_samples is not None and seen + n > self.max_samples:
                keep = self.max_samples - seen
                feed = {k: v[:keep] for k, v in feed.items()}
                n = keep
            if n <= 0:
                return
            yield feed
            seen += n
            if self.max_samples is not None and seen >= self.max_samples:
                return


class TextReader(CalibrationReader):
    """Sentences tokenised by a Hugging Face-style tokenizer, padded per batch.

    ``tokenizer(list_of_str, padding=True, truncation=True, max_length=..., return_tensors="np")``
    must return a mapping; keys present in ``input_names`` are fed (cast to
    ``int64``, what exported transformers expect). ``input_names=None`` keeps
    ``input_ids`` and ``attention_mask``. ``pad_to_length``: pad (and truncate) every sample
    to exactly this many tokens, for a model exported with a fixed sequence length (default:
    pad each batch to its longest sample).
    """

    def __init__(self, sentences: Sequence[str], tokenizer: Callable[..., Mapping[str, Any]],
                 input_names: Sequence[str] | None = None, max_length: int = 128,
                 batch_size: int = 32, max_samples: int | None = None, seed: int | None = 0,
                 shuffle: bool = False, pad_to_length: int | None = None) -> None:
        super().__init__(batch_size, max_samples, seed, shuffle)
        if pad_to_length is not None and pad_to_length < 1:
            raise InvalidInputError(f"pad_to_length must be >= 1, got {pad_to_length}.")
        self.pad_to_length = pad_to_length
        self.sentences = [str(s) for s in sentences if str(s).strip()]
        if not self.sentences:
            raise InvalidInputError("TextReader got no non-empty sentences.")
        self.tokenizer = tokenizer
        self.input_names = list(input_names or ("input_ids", "attention_mask"))
        self.max_length = max_length

    @property
    def num_samples(self) -> int:
        return len(self.sentences)

    def _load(self, indices: np.ndarray) -> Feed:
        fixed = self.pad_to_length
        enc = self.tokenizer([self.sentences[int(i)] for i in indices],
                             padding="max_length" if fixed else True, truncation=True,
                             max_length=fixed or self.max_length, return_tensors="np")
        missing = [k for k in self.input_names if k not in enc]
        if missing:
            raise InvalidInputError(f"The tokenizer produced {sorted(enc)} but the model needs {missing}.")
        return {k: np.asarray(enc[k]).astype(np.int64) for k in self.input_names}


def limit_samples(batches: Iterable[Feed], max_samples: int | None) -> Iterator[Feed]:
    """Yield batches until ``max_samples`` samples (first dimension) have been seen."""
    seen = 0
    for feed in batches:
        if max_samples is not None and seen >= max_samples:
            return
        if max_samples is not None:
            n = next(iter(feed.values())).shape[0] if feed else 0
            if seen + n > max_samples:
                feed = {k: v[: max_samples - seen] for k, v in feed.items()}
        yield feed
        seen += next(iter(feed.values())).shape[0] if feed else 0
