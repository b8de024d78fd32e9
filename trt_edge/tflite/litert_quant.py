"""Make an INT8 .tflite with LiteRT's own post-training quantizer (no TensorFlow needed).

``ai-edge-litert`` ships the calibrator behind TFLite's converter
(``_pywrap_tensorflow_lite_calibration_wrapper``, TFLite's ``QuantizeModel``): it feeds
calibration data, records ranges, and writes a full-integer model with per-channel
int8 weights, int8 activations (asymmetric, TFLite's convention), int32 biases, and
QUANTIZE/DEQUANTIZE at the float interface. It is a private binding of that wheel, so
the call is kept here, in one place. Used to produce quantized models whose scales
the importer must carry over (MediaPipe ships none).

MediaPipe models store float16 weights behind DEQUANTIZE ops, which that quantizer does
not handle; :func:`fold_float16_weights` first rewrites them as float32 constants (exact).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .._lazy import require
from ..errors import CalibrationError, InvalidInputError, MissingDependencyError


def fold_float16_weights(model: bytes) -> bytes:
    """Replace every DEQUANTIZE of a constant float16 tensor by a float32 constant."""
    require("ai_edge_litert", "rewriting .tflite models")
    from ai_edge_litert import schema_py_generated as schema  # noqa: PLC0415 - lazy, optional extra
    flatbuffers = require("flatbuffers", "rewriting .tflite models")
    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    deq = {k for k, c in enumerate(m.operatorCodes)
           if max(c.builtinCode, c.deprecatedBuiltinCode) == schema.BuiltinOperator.DEQUANTIZE}
    changed = False
    for sg in m.subgraphs:
        kept = []
        for op in sg.operators:
            if op.opcodeIndex in deq:
                src = sg.tensors[op.inputs[0]]
                data = m.buffers[src.buffer].data if src.buffer < len(m.buffers) else None
                if src.type == schema.TensorType.FLOAT16 and data is not None and len(data):
                    values = np.frombuffer(bytes(bytearray(data)), np.float16).astype(np.float32)
                    buf = schema.BufferT()
                    buf.data = np.frombuffer(values.tobytes(), np.uint8)
                    m.buffers.append(buf)
                    sg.tensors[op.outputs[0]].buffer = len(m.buffers) - 1
                    changed = True
                    continue
            kept.append(op)
        sg.operators = kept
    if not changed:
        return model
    # Drop operator codes no operator uses any more (the quantizer rejects a model that lists
    # an op version it does not register, even when unused).
    used = sorted({op.opcodeIndex for sg in m.subgraphs for op in sg.operators})
    remap = {old: new for new, old in enumerate(used)}
    m.operatorCodes = [m.operatorCodes[i] for i in used]
    for sg in m.subgraphs:
        for op in sg.operators:
            op.opcodeIndex = remap[op.opcodeIndex]
    builder = flatbuffers.Builder(len(model) * 2 + 1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def quantize_int8(model: str | os.PathLike[str] | bytes, calibration: Iterable[Sequence[np.ndarray]],
                  output: str | os.PathLike[str] | None = None, io_dtype: str = "float32") -> bytes:
    """Full-integer INT8 quantization of a float .tflite with LiteRT's calibrator.

    ``calibration``: feeds, each a list of arrays in the model's input order.
    ``io_dtype``: "float32" keeps float inputs/outputs (QUANTIZE/DEQUANTIZE at the edges);
    "int8" makes the interface int8 too (what microcontroller/NPU deployments use).
    Returns the bytes and writes ``output`` if given.
    """
    if io_dtype not in ("float32", "int8"):
        raise InvalidInputError(f"io_dtype must be 'float32' or 'int8', got '{io_dtype}'.")
    require("ai_edge_litert", "quantizing .tflite models with LiteRT")
    import importlib
    try:  # a private binding of the ai-edge-litert wheel (see the module docstring)
        wrapper = importlib.import_module("ai_edge_litert._pywrap_tensorflow_lite_calibration_wrapper")
    except ImportError as exc:
        raise MissingDependencyError(f"This ai-edge-litert has no post-training calibrator ({exc}); install "
                                     "the version this was tested with: pip install 'ai-edge-litert==2.3.0'.") from exc
    raw = Path(model).read_bytes() if not isinstance(model, (bytes, bytearray)) else bytes(model)
    raw = fold_float16_weights(raw)
    cal = wrapper.CalibrationWrapper(raw, [], [])
    prepared = False
    n = 0
    for feed in calibration:
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in feed]
        if not prepared:
            cal.Prepare([list(a.shape) for a in arrays])
            prepared = True
        cal.FeedTensor(arrays)
        n += 1
    if n == 0:
        raise InvalidInputError("quantize_int8 needs at least one calibration feed.")
    io, i8, i32 = (np.dtype(t).num for t in (np.dtype(io_dtype), np.int8, np.int32))
    try:
        out = bytes(cal.QuantizeModel(io, io, False, i8, i32, False, False))
    except Exception as exc:  # noqa: BLE001 - the binding raises RuntimeError with TFLite's message
        raise CalibrationError(f"LiteRT's quantizer failed: {exc}") from exc
    if output is not None:
        from ..artifacts import atomic_write_bytes
        atomic_write_bytes(output, out)
    return out
