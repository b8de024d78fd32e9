"""Read a TFLite flatbuffer into plain Python objects.

The flatbuffer is parsed with the ``tflite`` package's generated schema (imported
lazily: ``pip install 'trt-edge[tflite]'``). Constant buffers come out as NumPy
arrays in their stored dtype; sparse constants (TFLite's ``DENSIFY`` input) are
densified here, in NumPy, so the converter only ever sees dense weights.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._lazy import require
from ..errors import InvalidInputError, ModelImportError

# TFLite TensorType -> NumPy dtype (tflite/TensorType.py numbering).
_TENSOR_TYPES: dict[int, Any] = {
    0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_,
    7: np.int16, 9: np.int8, 10: np.float64, 12: np.uint64, 15: np.uint32, 16: np.uint16,
}
_TENSOR_TYPE_NAMES = {0: "FLOAT32", 1: "FLOAT16", 2: "INT32", 3: "UINT8", 4: "INT64", 5: "STRING",
                      6: "BOOL", 7: "INT16", 8: "COMPLEX64", 9: "INT8", 10: "FLOAT64", 11: "COMPLEX128",
                      12: "UINT64", 13: "RESOURCE", 14: "VARIANT", 15: "UINT32", 16: "UINT16",
                      17: "INT4", 18: "BFLOAT16"}


@dataclasses.dataclass(frozen=True)
class QuantParams:
    """Affine quantization of one tensor: ``real = scale * (q - zero_point)``.

    ``axis`` is the quantized dimension for per-channel parameters (len(scale) > 1).
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1


@dataclasses.dataclass
class TflTensor:
    index: int
    name: str
    shape: tuple[int, ...]
    signature: tuple[int, ...]  # -1 marks a dynamic dimension
    dtype: np.dtype
    type_name: str
    data: np.ndarray | None  # constant value (stored dtype, dense), None for activations
    quant: QuantParams | None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def quantized(self) -> bool:
        return self.quant is not None and self.dtype in (np.dtype(np.int8), np.dtype(np.uint8),
                                                         np.dtype(np.int16), np.dtype(np.int32))


@dataclasses.dataclass
class TflOperator:
    index: int
    opcode: str                 # builtin name, e.g. "CONV_2D", or "CUSTOM"
    custom_code: str | None
    inputs: list[int]           # -1 marks an omitted optional input
    outputs: list[int]
    custom_options: bytes
    _op: Any = dataclasses.field(repr=False, default=None)

    @property
    def kind(self) -> str:
        return f"CUSTOM:{self.custom_code}" if self.opcode == "CUSTOM" else self.opcode

    def options(self, class_name: str) -> Any:
        """The op's builtin options table as the ``tflite.<class_name>`` accessor."""
        tfl = require("tflite", "reading TensorFlow Lite models")
        cls = getattr(tfl, class_name)
        table = self._op.BuiltinOptions()
        if table is None:
            table2 = getattr(self._op, "BuiltinOptions2", lambda: None)()
            table = table2
        obj = cls()
        if table is None:
            # Absent options table: every field reads its schema default.
            import flatbuffers
            builder = flatbuffers.Builder(16)
            builder.StartObject(0)
            builder.Finish(builder.EndObject())
            data = builder.Output()
            obj.Init(data, flatbuffers.encode.Get(flatbuffers.packer.uoffset, data, 0))
            return obj
        obj.Init(table.Bytes, table.Pos)
        return obj


@dataclasses.dataclass
class TflModel:
    path: str | None
    version: int
    description: str
    tensors: list[TflTensor]
    operators: list[TflOperator]
    inputs: list[int]
    outputs: list[int]
    n_subgraphs: int

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.operators:
            counts[op.kind] = counts.get(op.kind, 0) + 1
        return counts


def _opcode_names(tfl: Any) -> dict[int, str]:
    return {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def _index_vector(dm: Any, kind: str) -> np.ndarray:
    """Array segments / indices of a sparse dimension (Int32/Uint16/Uint8 vector union)."""
    tfl = require("tflite")
    vtype = dm.ArraySegmentsType() if kind == "segments" else dm.ArrayIndicesType()
    table = dm.ArraySegments() if kind == "segments" else dm.ArrayIndices()
    cls = {1: tfl.Int32Vector, 2: tfl.Uint16Vector, 3: tfl.Uint8Vector}.get(vtype)
    if cls is None or table is None:
        raise ModelImportError(f"Sparse tensor dimension has no {kind} vector (type {vtype}); the "
                               "model's sparsity metadata is incomplete.")
    vec = cls()
    vec.Init(table.Bytes, table.Pos)
    return np.asarray(vec.ValuesAsNumpy(), dtype=np.int64)


def densify(values: np.ndarray, dense_shape: tuple[int, ...], traversal_order: list[int],
            block_map: list[int], dims: list[tuple[str, int, np.ndarray | None, np.ndarray | None]]
            ) -> np.ndarray:
    """Expand a TFLite sparse tensor (TACO-style, as TFLite's ``FormatConverter``) to dense.

    ``dims[i]`` describes traversal level ``i``: ("dense", size, None, None) or
    ("csr", 0, segments, indices). Levels past the tensor's rank are the block
    dimensions of the original dims in ``block_map``. Values are stored in the
    depth-first order of the traversal, which a breadth-first expansion that keeps
    each parent's children together reproduces; done level by level in NumPy.
    """
    rank = len(dense_shape)
    if len(dims) != len(traversal_order):
        raise ModelImportError(f"Sparse tensor has {len(dims)} dimension metadata entries but a "
                               f"traversal order of {len(traversal_order)}.")
    pos = np.zeros(1, dtype=np.int64)                 # position in this level's storage
    coords = np.zeros((1, 0), dtype=np.int64)         # per leaf: index at each level so far
    for fmt, size, segments, indices in dims:
        if fmt == "dense":
            child = np.arange(size, dtype=np.int64)
            pos = (pos[:, None] * size + child[None, :]).reshape(-1)
            coords = np.concatenate([np.repeat(coords, size, axis=0),
                                     np.tile(child, coords.shape[0])[:, None]], axis=1)
        else:
            assert segments is not None and indices is not None
            starts, ends = segments[pos], segments[pos + 1]
            counts = ends - starts
            parent = np.repeat(np.arange(pos.size), counts)
            offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
            pos = np.repeat(starts, counts) + offsets
            coords = np.concatenate([coords[parent], indices[pos][:, None]], axis=1)
    if pos.size != values.size:
        raise ModelImportError(f"Sparse tensor metadata describes {pos.size} stored values but the "
                               f"buffer holds {values.size}; the model file is inconsistent.")
    orig = np.zeros((pos.size, rank), dtype=np.int64)
    block_sizes = [dims[rank + k][1] for k in range(len(block_map))]
    for level in range(rank):
        orig[:, traversal_order[level]] = coords[:, level]
    for level in range(rank, len(traversal_order)):
        block = traversal_order[level] - rank
        dim = block_map[block]
        orig[:, dim] = orig[:, dim] * block_sizes[block] + coords[:, level]
    dense = np.zeros(dense_shape, dtype=values.dtype)
    dense[tuple(orig.T)] = values.reshape(-1)
    return dense


def _tensor_data(model: Any, tensor: Any, raw: bytes, dtype: Any) -> np.ndarray | None:
    buf = model.Buffers(tensor.Buffer())
    if buf is None:
        return None
    offset = buf.Offset() if hasattr(buf, "Offset") else 0
    if offset > 1:  # large models keep buffers outside the flatbuffer
        data = np.frombuffer(raw, dtype=np.uint8, count=buf.Size(), offset=offset)
    else:
        if buf.DataLength() == 0:
            return None
        data = buf.DataAsNumpy()
    return np.frombuffer(data.tobytes(), dtype=dtype).copy()


def _sparse_dense(tensor: Any, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    sp = tensor.Sparsity()
    order = [int(v) for v in sp.TraversalOrderAsNumpy()] if sp.TraversalOrderLength() else list(range(len(shape)))
    block_map = [int(v) for v in sp.BlockMapAsNumpy()] if sp.BlockMapLength() else []
    dims: list[tuple[str, int, np.ndarray | None, np.ndarray | None]] = []
    for i in range(sp.DimMetadataLength()):
        dm = sp.DimMetadata(i)
        if dm.Format() == 0:
            dims.append(("dense", int(dm.DenseSize()), None, None))
        else:
            dims.append(("csr", 0, _index_vector(dm, "segments"), _index_vector(dm, "indices")))
    return densify(values, shape, order, block_map, dims)


def read_model(source: str | os.PathLike[str] | bytes) -> TflModel:
    """Parse a .tflite file (or its bytes). Only the main subgraph is converted."""
    tfl = require("tflite", "reading TensorFlow Lite models")
    path: str | None = None
    if isinstance(source, (bytes, bytearray)):
        raw = bytes(source)
    else:
        p = Path(source)
        if not p.exists():
            raise InvalidInputError(f"TFLite model '{p}' does not exist. Check the path.")
        if p.is_dir():
            raise InvalidInputError(f"'{p}' is a directory; give the path of a .tflite file.")
        raw = p.read_bytes()
        path = str(p)
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise InvalidInputError(f"'{path or 'the given bytes'}' is not a TFLite flatbuffer (no 'TFL3' "
                                "identifier); give a .tflite model.")
    try:
        model = tfl.Model.GetRootAsModel(raw, 0)
        n_sub = model.SubgraphsLength()
        sg = model.Subgraphs(0)
    except Exception as exc:  # noqa: BLE001 - flatbuffers raises struct/index errors
        raise InvalidInputError(f"Cannot parse '{path or 'the given bytes'}' as a TFLite model: {exc}") from exc
    names = _opcode_names(tfl)
    tensors: list[TflTensor] = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        ttype = int(t.Type())
        type_name = _TENSOR_TYPE_NAMES.get(ttype, str(ttype))
        np_type = _TENSOR_TYPES.get(ttype)
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        signature = tuple(int(d) for d in t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength() else shape
        data = None
        if np_type is not None:
            data = _tensor_data(model, t, raw, np_type)
            if data is not None:
                if t.Sparsity() is not None:
                    data = _sparse_dense(t, data, shape)
                elif data.size == int(np.prod(shape, dtype=np.int64)):
                    data = data.reshape(shape)
                else:
                    raise ModelImportError(f"Tensor '{t.Name().decode()}' holds {data.size} values but its "
                                           f"shape {shape} needs {int(np.prod(shape))}.")
        q = t.Quantization()
        quant = None
        if q is not None and q.ScaleLength() > 0:
            zp = q.ZeroPointAsNumpy() if q.ZeroPointLength() else np.zeros(q.ScaleLength(), np.int64)
            quant = QuantParams(np.asarray(q.ScaleAsNumpy(), np.float32), np.asarray(zp, np.int64),
                                int(q.QuantizedDimension()))
        tensors.append(TflTensor(i, t.Name().decode("utf-8", "replace"), shape, signature,
                                 np.dtype(np_type) if np_type is not None else np.dtype(object), type_name,
                                 data, quant))
    ops: list[TflOperator] = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        oc = model.OperatorCodes(op.OpcodeIndex())
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        name = names.get(code, f"BUILTIN_{code}")
        custom = oc.CustomCode().decode() if name == "CUSTOM" and oc.CustomCode() else None
        custom_opts = op.CustomOptionsAsNumpy().tobytes() if op.CustomOptionsLength() else b""
        ops.append(TflOperator(i, name, custom, [int(v) for v in op.InputsAsNumpy()] if op.InputsLength() else [],
                               [int(v) for v in op.OutputsAsNumpy()], custom_opts, op))
    desc = model.Description().decode("utf-8", "replace") if model.Description() else ""
    return TflModel(path, int(model.Version()), desc, tensors, ops,
                    [int(v) for v in sg.InputsAsNumpy()], [int(v) for v in sg.OutputsAsNumpy()], n_sub)
