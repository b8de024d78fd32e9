"""Batches the model allows: fixed-batch models (static ``1x3x224x224``, a fixed sequence length).

TensorRT and Jetson engines are usually exported with static shapes. Every precision path
(calibration, method selection, sensitivity, the TensorRT calibrator, eval, compare) takes
whatever batches the user's data comes in and regroups them here into the batch size the
model allows; a model with a dynamic batch keeps the batches as given.

Regrouping never reorders samples. The last, short group is dropped when at least one full
batch was produced (said in the log: its samples are not seen), and padded by repeating its
own rows when the whole data set is smaller than one batch (the only way to run at all).
"""
from __future__ import annotations

import logging
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx

from ..errors import InvalidInputError
from ..onnx_io import TensorSpec, graph_inputs

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]


def fixed_batch(specs: Sequence[TensorSpec] | onnx.ModelProto) -> int | None:
    """The fixed leading (batch) dimension of the inputs, or None when it is dynamic.

    Inputs of rank 0 are ignored. If inputs disagree (one fixed, one dynamic), the fixed one wins;
    two different fixed sizes raise :class:`InvalidInputError` (no batch can feed such a model).
    """
    if isinstance(specs, onnx.ModelProto):
        specs = graph_inputs(specs)
    leads = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0}
    if len(leads) > 1:
        raise InvalidInputError(f"The model's inputs have different fixed batch sizes {sorted(leads)}; "
                                "re-export it with one batch size (or a dynamic batch axis).")
    return leads.pop() if leads else None


def fixed_dims(specs: Sequence[TensorSpec] | onnx.ModelProto) -> dict[str, dict[int, int]]:
    """Per input, its fixed non-batch dimensions ``{axis: size}`` (e.g. a sequence length)."""
    if isinstance(specs, onnx.ModelProto):
        specs = graph_inputs(specs)
    return {s.name: {i: int(d) for i, d in enumerate(s.shape) if i > 0 and isinstance(d, int) and d > 0}
            for s in specs if s.shape}


def fixed_sequence_length(specs: Sequence[TensorSpec] | onnx.ModelProto,
                          names: Sequence[str] = ("input_ids", "attention_mask", "token_type_ids")) -> int | None:
    """The fixed axis-1 length shared by a transformer's token inputs, or None when it is dynamic."""
    dims = fixed_dims(specs)
    found = {dims[n][1] for n in names if n in dims and 1 in dims[n]}
    return found.pop() if len(found) == 1 else None


def _rows(feed: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feed.values()), None)
    return int(np.shape(first)[0]) if first is not None and np.ndim(first) else 1


def check_feed_shapes(feed: Mapping[str, np.ndarray], dims: Mapping[str, Mapping[int, int]]) -> None:
    """Raise a clear error when a feed disagrees with a fixed non-batch dimension."""
    for name, axes in dims.items():
        if name not in feed:
            continue
        shape = np.shape(feed[name])
        for axis, size in axes.items():
            if axis < len(shape) and shape[axis] != size:
                hint = (" For text, pad every sample to that length (trt-edge calibrate does so for a model "
                        "with a fixed sequence length; TextReader(pad_to_length=N))." if axis == 1 else "")
                raise InvalidInputError(f"Input '{name}' has {shape[axis]} on axis {axis} but the model "
                                        f"fixes it to {size} (model input shape {dict(axes)}).{hint}")


def rebatch(batches: Iterable[Mapping[str, np.ndarray]], batch_size: int, *,
            dims: Mapping[str, Mapping[int, int]] | None = None,
            what: str = "calibration") -> Iterator[Feed]:
    """Regroup ``batches`` into batches of exactly ``batch_size`` samples (axis 0 of every input).

    Samples keep their order. The remainder after the last full batch is dropped (logged) when at
    least one full batch was produced; when the data holds fewer samples than one batch, that short
    batch is padded by repeating its rows. ``dims``: fixed non-batch dimensions to check each feed
    against (see :func:`fixed_dims`), so a wrong sequence length fails with a message, not in
    ONNX Runtime.
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}.")
    pending: list[Feed] = []
    held = 0
    produced = 0
    for feed in batches:
        feed = {k: np.asarray(v) for k, v in feed.items()}
        if dims:
            check_feed_shapes(feed, dims)
        n = _rows(feed)
        if n == batch_size and not pending:  # the common case: nothing to regroup, no copy
            produced += 1
            yield feed
            continue
        pending.append(feed)
        held += n
        while held >= batch_size:
            merged = {k: np.concatenate([p[k] for p in pending]) if len(pending) > 1 else pending[0][k]
                      for k in pending[0]}
            out = {k: np.ascontiguousarray(v[:batch_size]) for k, v in merged.items()}
            rest = {k: v[batch_size:] for k, v in merged.items()}
            held -= batch_size
            pending = [rest] if held else []
            produced += 1
            yield out
    if held:
        if produced:
            log.info("%s: the last %d sample(s) do not fill a batch of %d (the model's fixed batch) and are "
                     "not used", what, held, batch_size)
        else:
            merged = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
            reps = -(-batch_size // held)
            log.info("%s: only %d sample(s) for the model's fixed batch of %d: repeating them to fill it",
                     what, held, batch_size)
            yield {k: np.ascontiguousarray(np.concatenate([v] * reps)[:batch_size]) for k, v in merged.items()}


class Rebatched:
    """A re-iterable :func:`rebatch` view of a re-iterable reader (TensorRT's calibrator and
    sensitivity analysis iterate twice)."""

    def __init__(self, batches: Iterable[Mapping[str, np.ndarray]], batch_size: int, *,
                 dims: Mapping[str, Mapping[int, int]] | None = None, what: str = "calibration") -> None:
        self.batches, self.batch_size, self.dims, self.what = batches, batch_size, dims, what

    def __iter__(self) -> Iterator[Feed]:
        return rebatch(self.batches, self.batch_size, dims=self.dims, what=self.what)


class SizedRebatched(Rebatched):
    """:class:`Rebatched` over data whose sample count is known (a reader or a list of feeds), so
    progress can show a total."""

    def __init__(self, batches: Iterable[Mapping[str, np.ndarray]], batch_size: int, samples: int, **kw) -> None:  # noqa: ANN003
        super().__init__(batches, batch_size, **kw)
        self.samples = samples

    def __len__(self) -> int:
        return max(1, self.samples // self.batch_size)


def _known_samples(batches: Iterable[Mapping[str, np.ndarray]]) -> int | None:
    n = getattr(batches, "num_samples", None)
    if isinstance(n, int):
        limit = getattr(batches, "max_samples", None)
        return min(n, limit) if limit else n
    if isinstance(batches, (list, tuple)):
        return sum(_rows(f) for f in batches)
    return None


def for_model(batches: Iterable[Mapping[str, np.ndarray]], model: onnx.ModelProto | Sequence[TensorSpec],
              what: str = "calibration") -> Iterable[Mapping[str, np.ndarray]]:
    """``batches`` regrouped to ``model``'s fixed batch (and checked against its fixed dims);
    unchanged when the batch is dynamic."""
    b = fixed_batch(model)
    if b is None:
        return batches
    log.info("%s: the model has a fixed batch of %d; regrouping the data into batches of %d", what, b, b)
    samples = _known_samples(batches)
    if samples is None:
        return Rebatched(batches, b, dims=fixed_dims(model), what=what)
    return SizedRebatched(batches, b, samples, dims=fixed_dims(model), what=what)


def split_feed(feed: Mapping[str, np.ndarray], batch_size: int) -> list[Feed]:
    """One feed of N rows as feeds of ``batch_size`` rows; the last is padded by repeating its last
    row (returned with the number of real rows in each)."""
    return [f for f, _ in split_feed_counted(feed, batch_size)]


def split_feed_counted(feed: Mapping[str, np.ndarray], batch_size: int) -> list[tuple[Feed, int]]:
    """:func:`split_feed` with each piece's count of real (unpadded) rows."""
    n = _rows(feed)
    out: list[tuple[Feed, int]] = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        part = {k: np.asarray(v)[start:stop] for k, v in feed.items()}
        rows = stop - start
        if rows < batch_size:
            part = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - rows, axis=0)]) for k, v in part.items()}
        out.append((part, rows))
    return out


__all__ = ["fixed_batch", "fixed_dims", "fixed_sequence_length", "rebatch", "Rebatched", "SizedRebatched",
           "for_model",
           "split_feed", "split_feed_counted", "check_feed_shapes"]
