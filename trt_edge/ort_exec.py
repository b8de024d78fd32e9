"""Run an ONNX model in ONNX Runtime for *verification*: the one place that does it.

Graph passes, export and sparsification check their results against ONNX
Runtime on the CPU. They all open sessions through :func:`make_session` and run
them through :func:`run_model`, so every check uses the same settings and takes
every value type ONNX Runtime accepts:

* numeric and bool tensors (NumPy arrays), strings (``str``/``object`` arrays);
* tensor types NumPy lacks - ``bfloat16``, the ``float8`` variants, ``int4`` and
  ``uint4`` - as `ml_dtypes <https://github.com/jax-ml/ml_dtypes>`_ arrays (as
  ``onnx`` itself represents them). ONNX Runtime's Python binding cannot convert
  these from or to NumPy, so they travel as raw ``OrtValue`` buffers (4-bit types
  packed two to a byte, low nibble first, as ONNX stores them);
* sequences (lists of arrays), optional values (``None`` when absent) and maps.

This is the runtime helper of the core layer, not a backend: the
:class:`~trt_edge.runtime.onnxrt.OnnxRuntimeRunner` is what deployments use.
``onnxruntime`` is imported lazily.
"""
from __future__ import annotations

import ctypes
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from ._lazy import require
from .errors import InvalidInputError, RunnerError

__all__ = ["make_session", "run_model", "OPTIMIZATION_LEVELS", "ort_type_to_onnx", "is_session"]

OPTIMIZATION_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                       "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
_ALIASES = {"disable": "disabled", "none": "disabled", "off": "disabled"}

# ORT type names ("tensor(xxx)") -> ONNX element types, for every tensor type ONNX defines.
_ORT_ELEM: dict[str, int] = {}
for _name, _value in TensorProto.DataType.items():
    if _name != "UNDEFINED":
        _ORT_ELEM[_name.lower()] = _value
_ORT_ELEM.update({"float": TensorProto.FLOAT, "double": TensorProto.DOUBLE})

# Element types ORT's Python binding converts to/from NumPy itself.
_NUMPY_NATIVE = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT8,
                 TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32,
                 TensorProto.UINT32, TensorProto.INT64, TensorProto.UINT64, TensorProto.BOOL,
                 TensorProto.STRING, TensorProto.COMPLEX64, TensorProto.COMPLEX128}
_FOUR_BIT = {getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, n)}
_TWO_BIT = {getattr(TensorProto, n) for n in ("INT2", "UINT2") if hasattr(TensorProto, n)}


def ort_type_to_onnx(ort_type: str) -> int | None:
    """The ONNX element type of an ORT type string ``tensor(xxx)``; None for non-tensors."""
    m = re.fullmatch(r"tensor\((\w+)\)", ort_type or "")
    if not m:
        return None
    return _ORT_ELEM.get(m.group(1).lower())


def is_session(obj: Any) -> bool:
    """Whether ``obj`` is an ``onnxruntime.InferenceSession`` (duck-typed: no import needed)."""
    return hasattr(obj, "get_inputs") and hasattr(obj, "run") and hasattr(obj, "get_outputs")


def _model_source(model: onnx.ModelProto | bytes | str | os.PathLike[str]) -> bytes | str:
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    path = Path(model)
    if not path.is_file():
        raise InvalidInputError(f"Model file '{path}' does not exist (or is not a file); give the path "
                                "of an .onnx file.")
    return str(path)


def make_session(model: onnx.ModelProto | bytes | str | os.PathLike[str], *,
                 optimization: str = "disabled", intra_op_threads: int = 1,
                 providers: Sequence[str] | None = None, custom_op_libraries: Sequence[str] = (),
                 session_config: Mapping[str, str] | None = None, log_severity: int = 4) -> Any:
    """An ``onnxruntime.InferenceSession`` for checking ``model`` (ModelProto, bytes or path).

    ``optimization``: ONNX Runtime's own graph optimizer, "disabled" (the default:
    ORT must neither hide nor cause a difference), "basic", "extended" or "all".
    ``intra_op_threads``: 1 by default, so results do not depend on the machine's
    core count (0 lets ORT choose). ``providers``: default CPU only.
    ``custom_op_libraries``: shared libraries registering custom ops (e.g.
    onnxruntime-extensions). ``session_config``: extra session config entries.
    ``log_severity``: ORT's own log level for the session (default 4, fatal only: a
    failed run raises with ORT's message instead of also logging it).
    Raises :class:`RunnerError` when ONNX Runtime cannot load the model.
    """
    level = _ALIASES.get(optimization, optimization)
    if level not in OPTIMIZATION_LEVELS:
        raise InvalidInputError(f"optimization must be one of {sorted(OPTIMIZATION_LEVELS)}, "
                                f"got '{optimization}'.")
    if intra_op_threads < 0:
        raise InvalidInputError("intra_op_threads must be >= 0 (0 lets ONNX Runtime choose).")
    ort = require("onnxruntime", "running ONNX models in ONNX Runtime")
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[level])
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = 1
    so.log_severity_level = log_severity
    for key, value in (session_config or {}).items():
        so.add_session_config_entry(str(key), str(value))
    for lib in custom_op_libraries:
        if not Path(lib).is_file():
            raise InvalidInputError(f"Custom-op library '{lib}' does not exist; build it or fix the path.")
        so.register_custom_ops_library(str(lib))
    source = _model_source(model)
    try:
        return ort.InferenceSession(source, so, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise RunnerError(f"ONNX Runtime could not load the model: {_first_line(exc)}") from exc


def _first_line(exc: BaseException, limit: int = 600) -> str:
    text = str(exc).strip()
    return text if len(text) <= limit else text[:limit] + " ..."


def _np_dtype(elem: int) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem))
    except Exception as exc:  # noqa: BLE001 - onnx raises KeyError/ValueError by version
        raise RunnerError(f"No NumPy/ml_dtypes type for ONNX element type "
                          f"{TensorProto.DataType.Name(elem)}.") from exc


def _pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """``values`` (one element per byte) packed ``8 // bits`` to a byte, low bits first."""
    per = 8 // bits
    raw = values.reshape(-1).view(np.uint8) & ((1 << bits) - 1)
    pad = (-raw.size) % per
    if pad:
        raw = np.concatenate([raw, np.zeros(pad, np.uint8)])
    raw = raw.reshape(-1, per).astype(np.uint8)
    out = np.zeros(raw.shape[0], np.uint8)
    for i in range(per):
        out |= raw[:, i] << (bits * i)
    return out


def _unpack_bits(packed: np.ndarray, count: int, bits: int, dtype: np.dtype, signed: bool) -> np.ndarray:
    per = 8 // bits
    mask = (1 << bits) - 1
    vals = np.stack([(packed >> (bits * i)) & mask for i in range(per)], axis=-1).reshape(-1)[:count]
    vals = vals.astype(np.uint8)
    if signed:  # sign-extend into the byte ml_dtypes uses for one element
        vals = np.where(vals & (1 << (bits - 1)), vals | np.uint8(~mask & 0xFF), vals).astype(np.uint8)
    return vals.view(dtype)


def _to_ortvalue(ort: Any, name: str, value: Any, elem: int) -> Any:
    """An ``OrtValue`` holding ``value`` as ONNX element type ``elem`` (the raw bytes)."""
    dtype = _np_dtype(elem)
    arr = np.asarray(value, order="C")  # (ascontiguousarray would make a 0-d value 1-d)
    if arr.dtype != dtype:
        try:
            arr = arr.astype(dtype)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"Input '{name}' must be {dtype} (ONNX "
                                    f"{TensorProto.DataType.Name(elem)}), got {arr.dtype}.") from exc
    if elem in _FOUR_BIT or elem in _TWO_BIT:
        raw = _pack_bits(arr, 4 if elem in _FOUR_BIT else 2)
    else:
        raw = arr.reshape(-1).view(np.uint8)
    ov = ort.OrtValue.ortvalue_from_shape_and_type(list(arr.shape), elem)
    if ov.tensor_size_in_bytes() != raw.nbytes:
        raise RunnerError(f"Input '{name}': ONNX Runtime expects {ov.tensor_size_in_bytes()} bytes for "
                          f"{TensorProto.DataType.Name(elem)}{list(arr.shape)}, packed {raw.nbytes}.")
    if raw.nbytes:
        ctypes.memmove(ov.data_ptr(), raw.ctypes.data, raw.nbytes)
    return ov


def _from_ortvalue(ov: Any, elem: int) -> np.ndarray:
    shape = tuple(int(d) for d in ov.shape())
    dtype = _np_dtype(elem)
    nbytes = int(ov.tensor_size_in_bytes())
    raw = np.frombuffer(ctypes.string_at(ov.data_ptr(), nbytes), np.uint8) if nbytes else \
        np.zeros(0, np.uint8)
    count = int(np.prod(shape, dtype=np.int64))
    if elem in _FOUR_BIT or elem in _TWO_BIT:
        bits = 4 if elem in _FOUR_BIT else 2
        signed = elem in {getattr(TensorProto, n, -1) for n in ("INT4", "INT2")}
        return _unpack_bits(raw, count, bits, dtype, signed).reshape(shape)
    return raw.view(dtype).reshape(shape).copy()


def _quiet_run_options() -> Any:
    ort = require("onnxruntime", "running ONNX models in ONNX Runtime")
    ro = ort.RunOptions()
    ro.log_severity_level = 4  # a failing run raises with the message; do not also log it
    return ro


def _check_feeds(session: Any, feeds: Mapping[str, Any]) -> None:
    names = [i.name for i in session.get_inputs()]
    unknown = [k for k in feeds if k not in names]
    if unknown:
        raise InvalidInputError(f"Feeds {unknown} are not inputs of the model (inputs: {names}).")


def run_model(model_or_session: Any, feeds: Mapping[str, Any], *,
              output_names: Sequence[str] | None = None, optimization: str = "disabled") -> dict[str, Any]:
    """Run once; return ``{output name: value}``.

    ``model_or_session``: a ModelProto, bytes, a path, or a session from
    :func:`make_session` (``optimization`` applies only when a session is made here).
    Tensors come back as NumPy arrays (ml_dtypes arrays for bfloat16/float8/int4),
    sequences as lists, absent optionals as None. An input that is not fed must be
    optional in the model. Raises :class:`RunnerError` with ONNX Runtime's message
    when the run fails.
    """
    session = model_or_session if is_session(model_or_session) else \
        make_session(model_or_session, optimization=optimization)
    _check_feeds(session, feeds)
    outputs = list(output_names) if output_names is not None else [o.name for o in session.get_outputs()]
    out_types = {o.name: o.type for o in session.get_outputs()}
    unknown = [n for n in outputs if n not in out_types]
    if unknown:
        raise InvalidInputError(f"Outputs {unknown} are not outputs of the model "
                                f"(outputs: {list(out_types)}).")
    in_types = {i.name: i.type for i in session.get_inputs()}
    exotic_in = {n: e for n, t in in_types.items() if n in feeds
                 for e in [ort_type_to_onnx(t)] if e is not None and e not in _NUMPY_NATIVE}
    exotic_out = {n: e for n in outputs for e in [ort_type_to_onnx(out_types[n])]
                  if e is not None and e not in _NUMPY_NATIVE}
    try:
        run_options = _quiet_run_options()
        if not exotic_in and not exotic_out:
            values = session.run(outputs, dict(feeds), run_options)
            return dict(zip(outputs, values))
        ort = require("onnxruntime", "running ONNX models in ONNX Runtime")
        for n in outputs:
            if not out_types[n].startswith("tensor("):
                raise RunnerError(f"Output '{n}' is a {out_types[n]} in a model with bfloat16/float8/"
                                  "4-bit tensors at its interface: ONNX Runtime's Python API cannot "
                                  "return both kinds from one run; request fewer outputs.")
        ort_feeds = {}
        for name, value in feeds.items():
            t = in_types[name]
            if name in exotic_in:
                ort_feeds[name] = _to_ortvalue(ort, name, value, exotic_in[name])
            elif t.startswith("tensor("):
                ort_feeds[name] = ort.OrtValue.ortvalue_from_numpy(np.asarray(value, order="C"))
            else:
                raise RunnerError(f"Input '{name}' is a {t} in a model with bfloat16/float8/4-bit tensors "
                                  "at its interface: ONNX Runtime's Python API cannot take both kinds.")
        results = session.run_with_ort_values(outputs, ort_feeds, run_options)
        out: dict[str, Any] = {}
        for name, ov in zip(outputs, results):
            out[name] = _from_ortvalue(ov, exotic_out[name]) if name in exotic_out else ov.numpy()
        return out
    except (InvalidInputError, RunnerError):
        raise
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise RunnerError(f"ONNX Runtime failed to run the model: {_first_line(exc)}") from exc
