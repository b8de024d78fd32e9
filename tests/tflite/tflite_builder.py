"""Build small .tflite flatbuffers in the tests (LiteRT's own schema object API + flatbuffers).

Used to check, against LiteRT, converters of operators MediaPipe's models do not use.
Output shapes are given by the test (TFLite stores them in the file).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

_TYPES = {np.dtype(np.float32): 0, np.dtype(np.int32): 2, np.dtype(np.uint8): 3, np.dtype(np.int64): 4,
          np.dtype(np.int8): 9}


@dataclasses.dataclass
class Op:
    name: str                     # builtin operator name, e.g. "SOFTMAX"
    inputs: Sequence[Any]         # tensor names, or np.ndarray for constants
    output: str
    out_shape: Sequence[int]
    options: tuple[str, dict[str, Any]] | None = None  # ("SoftmaxOptions", {"beta": 1.0})
    extra_outputs: Sequence[tuple[str, Sequence[int]]] = ()
    out_dtype: Any = np.float32
    out_quant: tuple[float, int] | None = None  # (scale, zero point) of a quantized output


@dataclasses.dataclass
class Const:
    """A constant input, optionally quantized (per-tensor (scale, zp), or per-channel lists + axis)."""

    value: np.ndarray
    scale: Sequence[float] | None = None
    zero_point: Sequence[int] | None = None
    axis: int = 0
    #: sparse storage: (traversal_order, block_map, [("dense", size) | ("csr", segments, indices)]);
    #: ``value`` then holds only the stored values, and ``dense_shape`` the tensor's shape
    sparsity: tuple[Sequence[int], Sequence[int], Sequence[tuple[Any, ...]]] | None = None
    dense_shape: Sequence[int] | None = None


def build(inputs: dict[str, Sequence[int]], ops: list[Op], outputs: list[str]) -> bytes:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    m = s.ModelT()
    m.version = 3
    m.buffers = [s.BufferT()]
    m.operatorCodes = []
    sg = s.SubGraphT()
    sg.tensors, sg.operators = [], []
    index: dict[str, int] = {}

    def tensor(name: str, shape: Sequence[int], dtype: Any = np.float32, data: np.ndarray | None = None,
               quant: tuple[Sequence[float], Sequence[int], int] | None = None, sparsity: Any = None) -> int:
        t = s.TensorT()
        t.name, t.shape, t.type = name, np.asarray(shape, np.int32), _TYPES[np.dtype(dtype)]
        t.buffer = 0
        if quant is not None:
            q = s.QuantizationParametersT()
            q.scale = np.asarray(quant[0], np.float32)
            q.zeroPoint = np.asarray(quant[1], np.int64)
            q.quantizedDimension = quant[2]
            t.quantization = q
        if sparsity is not None:
            order, block_map, dims = sparsity
            sp = s.SparsityParametersT()
            sp.traversalOrder, sp.blockMap = list(order), list(block_map)
            sp.dimMetadata = []
            for d in dims:
                dm = s.DimensionMetadataT()
                if d[0] == "dense":
                    dm.format, dm.denseSize = s.DimensionType.DENSE, d[1]
                else:
                    dm.format = s.DimensionType.SPARSE_CSR
                    seg, idx = s.Int32VectorT(), s.Int32VectorT()
                    seg.values, idx.values = list(d[1]), list(d[2])
                    dm.arraySegmentsType = dm.arrayIndicesType = s.SparseIndexVector.Int32Vector
                    dm.arraySegments, dm.arrayIndices = seg, idx
                sp.dimMetadata.append(dm)
            t.sparsity = sp
        if data is not None:
            buf = s.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            m.buffers.append(buf)
            t.buffer = len(m.buffers) - 1
        sg.tensors.append(t)
        index[name] = len(sg.tensors) - 1
        return index[name]

    for name, shape in inputs.items():
        tensor(name, shape)
    codes: dict[str, int] = {}
    for k, op in enumerate(ops):
        code = getattr(s.BuiltinOperator, op.name)
        if op.name not in codes:
            oc = s.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
            m.operatorCodes.append(oc)
            codes[op.name] = len(m.operatorCodes) - 1
        ins = []
        for j, x in enumerate(op.inputs):
            if isinstance(x, Const):
                quant = None if x.scale is None else (x.scale, x.zero_point or [0] * len(x.scale), x.axis)
                shape = x.dense_shape if x.dense_shape is not None else x.value.shape
                ins.append(tensor(f"c{k}_{j}", shape, x.value.dtype, x.value, quant, x.sparsity))
            elif isinstance(x, np.ndarray):
                ins.append(tensor(f"c{k}_{j}", x.shape, x.dtype, x))
            else:
                ins.append(index[x])
        oq = None if op.out_quant is None else ([op.out_quant[0]], [op.out_quant[1]], 0)
        outs = [tensor(op.output, op.out_shape, op.out_dtype, None, oq)] + [tensor(n, sh) for n, sh in op.extra_outputs]
        o = s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = codes[op.name], ins, outs
        if op.options is not None:
            cls_name, fields = op.options
            opt = getattr(s, cls_name + "T")()
            for key, value in fields.items():
                setattr(opt, key, value)
            o.builtinOptionsType = getattr(s.BuiltinOptions, cls_name)
            o.builtinOptions = opt
        sg.operators.append(o)
    sg.inputs = [index[n] for n in inputs]
    sg.outputs = [index[n] for n in outputs]
    m.subgraphs = [sg]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())
