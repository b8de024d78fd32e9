"""Option and data checks shared by the commands, run before any long work.

Each check raises :class:`~trt_edge.errors.InvalidInputError` with a message
naming the option (or array) and the fix, so the CLI exits 2 without a traceback.
"""
from __future__ import annotations

import logging
import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..onnx_io import TensorSpec, check_array

log = logging.getLogger("trt_edge")

# Histogram bins per tensor: 2 * num_bins int64 counters each, so 65536 is 1 MiB per tensor.
MAX_NUM_BINS = 1 << 16
MIN_NUM_BINS = 256


def at_least(option: str, value: int | float | None, low: int | float) -> None:
    """``value`` (when given) must be >= ``low``."""
    if value is not None and not value >= low:  # also refuses NaN
        raise InvalidInputError(f"{option} must be >= {low}, got {value}.")


def finite_at_least(option: str, value: float | None, low: float) -> None:
    if value is not None and (not math.isfinite(value) or value < low):
        raise InvalidInputError(f"{option} must be a finite number >= {low}, got {value}.")


def num_bins(value: int) -> None:
    if not MIN_NUM_BINS <= value <= MAX_NUM_BINS:
        raise InvalidInputError(f"--num-bins must be between {MIN_NUM_BINS} and {MAX_NUM_BINS} "
                                f"(each tensor keeps 2 x num_bins counters), got {value}. "
                                "The default 2048 is what TensorRT uses.")


def known_names(option: str, given: Iterable[str], known: Sequence[str], what: str = "input") -> None:
    """Refuse names that are not in ``known`` (a typo would silently change the run)."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise InvalidInputError(f"{option} names unknown {what}(s) {unknown}; the model's {what}s are "
                                f"{list(known)}. Check the spelling.")


def warn_unknown(option: str, given: Iterable[str], known: Iterable[str], what: str) -> list[str]:
    """Log a warning for names that match nothing; returns them."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        log.warning("%s: no %s named %s in the model; they are ignored (check the spelling).",
                    option, what, ", ".join(unknown))
    return unknown


def conflict(flags: str, why: str) -> InvalidInputError:
    return InvalidInputError(f"{flags} cannot be used together: {why}.")


def float_list(option: str, text: str, count: Sequence[int] = (1, 3), positive: bool = False) -> tuple[float, ...]:
    """``"0.5,0.5,0.5"`` -> floats; the number of values must be one of ``count``."""
    parts = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = tuple(float(v) for v in parts)
    except ValueError as exc:
        raise InvalidInputError(f"{option} must be comma-separated numbers, e.g. 0.485,0.456,0.406; "
                                f"got {text!r}.") from exc
    if len(values) not in count:
        raise InvalidInputError(f"{option} needs {' or '.join(str(c) for c in sorted(set(count)))} "
                                f"value(s) (one per channel, or one for all), got {len(values)}: {text!r}.")
    if any(not math.isfinite(v) for v in values) or (positive and any(v <= 0 for v in values)):
        raise InvalidInputError(f"{option} values must be finite{' and > 0' if positive else ''}, got {text!r}.")
    return values


def image_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise InvalidInputError(f"--image-size must be HxW, e.g. 224x224; got {text!r}.") from exc
    if h < 1 or w < 1:
        raise InvalidInputError(f"--image-size must be at least 1x1, got {text!r}.")
    return h, w


def load_arrays(path, option: str) -> dict[str, np.ndarray]:  # noqa: ANN001 - a path
    """Arrays of a .npz (name -> array) or .npy (``""`` -> array), with a clear error for bad files."""
    import zipfile
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"{option} '{p}' does not exist.")
    if p.is_dir():
        raise InvalidInputError(f"{option} '{p}' is a folder: give a .npz file (one array per input name).")
    if p.stat().st_size == 0:
        raise InvalidInputError(f"{option} '{p}' is empty (0 bytes): save the arrays with np.savez.")
    try:
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.ndarray):
            return {"": data}
        with data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise InvalidInputError(f"Cannot read {option} '{p}' as .npz/.npy ({type(exc).__name__}: {exc}). "
                                "Save one array per input name with np.savez (object arrays are not "
                                "allowed).") from exc


def check_arrays(arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], source: str,
                 sample_axis: bool = True) -> dict[str, np.ndarray]:
    """Check data arrays against the model's inputs before running anything.

    The messages are those the runners give (``Runner.validate_inputs``). With
    ``sample_axis`` the leading axis is the sample count (the batch is regrouped
    later), so only the other axes are compared. float64 arrays for float32 inputs
    (NumPy's default) are cast with a note; every other dtype mismatch is refused.
    Returns the (possibly cast) arrays; the caller's arrays are not modified.
    """
    by_name = {s.name: s for s in specs}
    out = dict(arrays)
    for name, arr in arrays.items():
        spec = by_name.get(name)
        if spec is None:
            continue
        def _cast_wider_float(a: np.ndarray, name: str = name, spec: TensorSpec = spec) -> np.ndarray | None:
            if np.issubdtype(a.dtype, np.floating) and np.issubdtype(spec.dtype, np.floating) \
                    and a.dtype.itemsize > spec.dtype.itemsize:
                log.warning("%s: input '%s' is %s; casting it to the model's %s.", source, name,
                            a.dtype.name, spec.dtype.name)
                return a.astype(spec.dtype)
            return None

        arr = check_array(name, np.asarray(arr), spec, where=source, skip_axes=(0,) if sample_axis else (),
                          cast=_cast_wider_float)
        if np.issubdtype(arr.dtype, np.floating) and arr.size:
            finite = int(np.count_nonzero(np.isfinite(arr)))
            if finite == 0:
                raise InvalidInputError(f"{source}: input '{name}' holds no finite value (all NaN/inf): "
                                        "fix the data.")
            if finite < arr.size:
                log.warning("%s: input '%s' has %d NaN/inf value(s) of %d; they are ignored by calibration "
                            "but may spread through the model.", source, name, arr.size - finite, arr.size)
        out[name] = arr
    return out


__all__ = ["MAX_NUM_BINS", "at_least", "finite_at_least", "num_bins", "known_names", "warn_unknown",
           "conflict", "float_list", "image_size", "load_arrays", "check_arrays"]
