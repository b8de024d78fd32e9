"""Input feeds for bench / compare / eval: from a file, or random with chosen shapes."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..onnx_io import TensorSpec, load_feeds, random_inputs


@dataclasses.dataclass
class InputOptions:
    """How to make the feed for a model.

    ``inputs``: a .npz/.npy file or a dict name -> array (wins over random data).
    ``shapes``: exact shapes per input name (``{"input": (8, 3, 224, 224)}``).
    ``batch``: size of the leading dimension of every input whose leading dim is dynamic.
    ``dim_values``: sizes of named dynamic dims (``{"seq": 128}``); others default to 1.
    ``seed``: for random data, so two runs (and two runners) see the same inputs.
    """

    inputs: str | os.PathLike[str] | Mapping[str, np.ndarray] | None = None
    shapes: Mapping[str, Sequence[int]] = dataclasses.field(default_factory=dict)
    batch: int | None = None
    dim_values: Mapping[str, int] = dataclasses.field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch is not None and self.batch < 1:
            raise InvalidInputError(f"batch must be >= 1, got {self.batch}.")
        for name, value in self.dim_values.items():
            if int(value) < 1:
                raise InvalidInputError(f"Dimension '{name}' must be >= 1, got {value}.")


def _match_file_arrays(arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec],
                       source: str) -> dict[str, np.ndarray]:
    names = [s.name for s in specs]
    if set(names) <= set(arrays):
        return {n: arrays[n] for n in names}
    # A single-input model fed from a file with one array (or an ``x`` array, the
    # labelled-data convention) needs no naming ceremony.
    if len(specs) == 1:
        for key in ("", "x"):
            if key in arrays:
                return {names[0]: arrays[key]}
        if len(arrays) == 1:
            return {names[0]: next(iter(arrays.values()))}
    raise InvalidInputError(f"{source} has arrays {sorted(arrays)} but the model's inputs are {names}: "
                            "save one array per input name (np.savez(path, **{name: array})).")


def load_input_file(path: str | os.PathLike[str], specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Arrays of a .npz/.npy file mapped onto the model's input names."""
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"Input file '{p}' does not exist.")
    return _match_file_arrays(load_feeds(str(p)), specs, f"'{p}'")


def make_feed(specs: Sequence[TensorSpec], options: InputOptions | None = None) -> dict[str, np.ndarray]:
    """One feed for a model with ``specs``, from ``options.inputs`` or random data.

    Random data: normal floats, small ints for ids, ones for attention masks
    (``onnx_io.random_inputs``); a given file or dict is used as is (the runner
    validates it).
    """
    options = options or InputOptions()
    if options.inputs is not None:
        if isinstance(options.inputs, Mapping):
            return _match_file_arrays(dict(options.inputs), specs, "The given inputs")
        return load_input_file(options.inputs, specs)
    dim_values = dict(options.dim_values)
    shapes = {k: tuple(int(d) for d in v) for k, v in options.shapes.items()}
    unknown = sorted(set(shapes) - {s.name for s in specs})
    if unknown:
        raise InvalidInputError(f"Shapes given for unknown inputs {unknown}; the model's inputs are "
                                f"{[s.name for s in specs]}.")
    if options.batch is not None:
        for spec in specs:
            if spec.name in shapes or not spec.shape:
                continue
            lead = spec.shape[0]
            if isinstance(lead, int) and lead >= 0:
                if lead != options.batch:
                    raise InvalidInputError(
                        f"Input '{spec.name}' has a fixed batch of {lead}; it cannot run with batch "
                        f"{options.batch}. Re-export with a dynamic batch axis or use --batch {lead}.")
            elif isinstance(lead, str) and lead:
                dim_values.setdefault(lead, options.batch)
            else:  # an unnamed dynamic dim: set this input's shape explicitly
                rest = [d if isinstance(d, int) and d >= 0 else int(dim_values.get(d, 1))
                        if isinstance(d, str) else 1 for d in spec.shape[1:]]
                shapes[spec.name] = (options.batch, *rest)
    return random_inputs(specs, shapes=shapes, dim_values=dim_values, seed=options.seed)


def cast_feed(feed: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Cast floating inputs to the float type a model wants (an FP16-I/O model vs an FP32 one).

    Only float -> float casts are done; anything else is left for the runner to reject.
    """
    out = dict(feed)
    for spec in specs:
        arr = out.get(spec.name)
        if arr is not None and arr.dtype != spec.dtype and np.issubdtype(arr.dtype, np.floating) \
                and np.issubdtype(spec.dtype, np.floating):
            out[spec.name] = arr.astype(spec.dtype)
    return out


def batch_size_of(feed: Mapping[str, np.ndarray]) -> int:
    """Leading dimension shared by the inputs (1 for scalars/mismatched leading dims)."""
    leads = {a.shape[0] for a in feed.values() if getattr(a, "ndim", 0) >= 1}
    return leads.pop() if len(leads) == 1 else 1


__all__ = ["InputOptions", "make_feed", "load_input_file", "cast_feed", "batch_size_of"]
