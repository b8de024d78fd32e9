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
    ``dim_values``: sizes of named dynamic dims (``{"seq": 128}``).
    ``recorded_shapes``: shapes the model's sidecar records (an export's sample, a build
    profile; see :func:`recorded_shapes`), used for dynamic dims nothing else sets.
    ``seed``: for random data, so two runs (and two runners) see the same inputs.

    A dynamic leading (batch) axis without a value runs at 1; any other dynamic axis
    must get its size from ``shapes``, ``dim_values`` or ``recorded_shapes``, else
    :func:`make_feed` refuses (a guessed size of 1 gives meaningless timings).
    """

    inputs: str | os.PathLike[str] | Mapping[str, np.ndarray] | None = None
    shapes: Mapping[str, Sequence[int]] = dataclasses.field(default_factory=dict)
    batch: int | None = None
    dim_values: Mapping[str, int] = dataclasses.field(default_factory=dict)
    seed: int = 0
    recorded_shapes: Mapping[str, Sequence[int]] = dataclasses.field(default_factory=dict)

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
    (``onnx_io.random_inputs``), with every dynamic dimension resolved as
    :class:`InputOptions` says (refused when it cannot be); 0-d inputs stay 0-d. A
    given file or dict is used as is (the runner validates it).
    """
    options = options or InputOptions()
    if options.inputs is not None:
        if isinstance(options.inputs, Mapping):
            return _match_file_arrays(dict(options.inputs), specs, "The given inputs")
        return load_input_file(options.inputs, specs)
    shapes = {k: tuple(int(d) for d in v) for k, v in options.shapes.items()}
    unknown = sorted(set(shapes) - {s.name for s in specs})
    if unknown:
        raise InvalidInputError(f"Shapes given for unknown inputs {unknown}; the model's inputs are "
                                f"{[s.name for s in specs]}.")
    named = {d for s in specs if s.shape for d in s.shape if isinstance(d, str) and d}
    unknown = sorted(set(options.dim_values) - named)
    if unknown:
        raise InvalidInputError(f"--dim names {unknown} are not dynamic dimensions of the model's inputs "
                                f"(those are {sorted(named) or 'none'}). Check the spelling.")
    for spec in specs:
        if spec.name in shapes:
            continue
        if spec.shape is None:
            raise InvalidInputError(f"Input '{spec.name}' has an unknown rank: give its shape with "
                                    f"--shapes {spec.name}:1x3x224x224 (or --inputs file.npz).")
        shapes[spec.name] = _resolve_shape(spec, options)
    feed = random_inputs(specs, shapes=shapes, dim_values=dict(options.dim_values), seed=options.seed)
    return feed  # type: ignore[return-value]  # tensors only here: sequence inputs need --inputs


def _resolve_shape(spec: TensorSpec, options: InputOptions) -> tuple[int, ...]:
    assert spec.shape is not None
    recorded = options.recorded_shapes.get(spec.name)
    if recorded is not None and len(recorded) != len(spec.shape):
        recorded = None
    out: list[int] = []
    for axis, d in enumerate(spec.shape):
        if isinstance(d, int) and d >= 0:
            if axis == 0 and options.batch is not None and d != options.batch:
                raise InvalidInputError(
                    f"Input '{spec.name}' has a fixed batch of {d}; it cannot run with batch "
                    f"{options.batch}. Re-export with a dynamic batch axis or use --batch {d}.")
            out.append(d)
        elif isinstance(d, str) and d in options.dim_values:
            out.append(int(options.dim_values[d]))
        elif axis == 0:
            out.append(options.batch if options.batch is not None else 1)
        elif recorded is not None and int(recorded[axis]) >= 1:
            out.append(int(recorded[axis]))
        else:
            hint = f" or --dim {d}=SIZE" if isinstance(d, str) and d else ""
            example = "x".join(str(v) if isinstance(v, int) and v >= 0 else ("1" if i == 0 else "N")
                               for i, v in enumerate(spec.shape))
            raise InvalidInputError(
                f"Input '{spec.name}' ({spec.describe()}) has a dynamic dimension on axis {axis} whose size "
                f"neither the model nor its sidecar records: give the sizes to run with, e.g. --shapes "
                f"{spec.name}:{example} (N: the real size){hint}. A guessed size of 1 would time a "
                "meaningless run.")
    return tuple(out)


def recorded_shapes(artifact: str | os.PathLike[str], depth: int = 3) -> dict[str, tuple[int, ...]]:
    """Input shapes an artifact's sidecar records, following ``sources.onnx`` back to the export.

    Looks at ``input_shapes`` ({name: shape}), an export's first verification ``shapes``
    and a build profile's ``opt`` shapes; an empty dict when nothing is recorded.
    """
    from ..artifacts import read_sidecar
    from ..errors import TrtEdgeError

    p = Path(artifact)
    for _ in range(depth):
        try:
            meta = read_sidecar(p, verify=False)
        except (TrtEdgeError, OSError, ValueError, UnicodeDecodeError):
            return {}
        if not isinstance(meta, Mapping):
            return {}
        found = _shapes_in(meta)
        if found:
            return found
        src = ((meta.get("sources") or {}).get("onnx") or {}) if isinstance(meta.get("sources"), Mapping) else {}
        path = src.get("path") if isinstance(src, Mapping) else None
        if not path:
            return {}
        p = Path(path) if Path(path).is_absolute() else p.parent / path
        if not p.exists():
            p = Path(path)
    return {}


def _as_shape(value: object) -> tuple[int, ...] | None:
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(int(v) for v in value)
    return None


def _shapes_in(meta: Mapping[str, object]) -> dict[str, tuple[int, ...]]:
    candidates: list[object] = [meta.get("input_shapes")]
    verification = meta.get("verification")
    if isinstance(verification, list) and verification and isinstance(verification[0], Mapping):
        candidates.append(verification[0].get("shapes"))
    for holder in (meta, meta.get("options") if isinstance(meta.get("options"), Mapping) else {}):
        profiles = holder.get("profiles") if isinstance(holder, Mapping) else None
        if isinstance(profiles, list) and profiles and isinstance(profiles[0], Mapping):
            prof = profiles[0].get("shapes", profiles[0])
            if isinstance(prof, Mapping):
                opt = {}
                for name, v in prof.items():
                    if isinstance(v, Mapping):
                        v = v.get("opt")
                    elif isinstance(v, (list, tuple)) and len(v) == 3 and all(_as_shape(x) for x in v):
                        v = v[1]
                    opt[name] = v
                candidates.append(opt)
    for cand in candidates:
        if isinstance(cand, Mapping):
            shapes = {str(k): s for k, v in cand.items() if (s := _as_shape(v)) is not None}
            if shapes:
                return shapes
    return {}


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


__all__ = ["InputOptions", "make_feed", "load_input_file", "cast_feed", "batch_size_of", "recorded_shapes"]
