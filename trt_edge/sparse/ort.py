"""Running ``SparseLinear`` models in ONNX Runtime on the CPU (no TensorRT needed).

The ``sparsify`` pass writes ``SparseLinear`` nodes in the ``trt_edge`` domain; TensorRT
maps them to the ``SparseLinear`` plugin (csrc/sparse/plugin). For ONNX Runtime, the op is
hosted by onnxruntime-extensions' Python custom-op mechanism, which calls our native CPU
kernel (or, when that library is not built, a NumPy dense fallback, with a warning).
onnxruntime-extensions serves Python ops from its own domain (``ai.onnx.contrib``), so
:func:`for_onnxruntime` returns a copy of the model with the nodes moved there;
:func:`make_session` does that and registers the op library (a Runner over such a model:
``trt_edge.runtime.sparse_ort.make_runner``; ``sparse`` does not import ``runtime``).

Node contract (also in csrc/sparse/spec/sparse_linear.json):
inputs ``X [..., K]`` float, ``values`` float (CSR [nnz] / BSR [nnzb, br, bc]),
``col_idx`` int32, ``row_ptr`` int32, ``bias [N]`` float; output ``Y [..., N]``;
attributes ``format`` ("csr"|"bsr"), ``block_rows``, ``block_cols``, ``in_features``,
``out_features``. FP32 only in ONNX Runtime (the Python op host's types are fixed per op).
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any

import numpy as np
import onnx

from .._lazy import require
from ..errors import InvalidInputError, TrtEdgeError
from .formats import BsrWeight, CsrWeight, SparseWeight, to_dense
from .reference import OP_TYPE

log = logging.getLogger(__name__)

#: The domain the sparsify pass writes (TensorRT's parser ignores domains; ORT does not).
DOMAIN = "trt_edge"
ORT_EXTENSIONS_DOMAIN = "ai.onnx.contrib"

_registered = False
_register_lock = threading.Lock()
_warned_fallback = False


def weight_from_node_arrays(values: np.ndarray, col_idx: np.ndarray, row_ptr: np.ndarray, *,
                            fmt: str, block: tuple[int, int], shape: tuple[int, int]
                            ) -> SparseWeight:
    """The :class:`CsrWeight`/:class:`BsrWeight` a node's inputs and attributes describe."""
    if fmt == "csr":
        return CsrWeight(shape, row_ptr, col_idx, values.reshape(-1))
    if fmt == "bsr":
        return BsrWeight(shape, block, row_ptr, col_idx, values.reshape(-1, block[0], block[1]))
    raise InvalidInputError(f"SparseLinear format must be 'csr' or 'bsr', got '{fmt}'.")


def run_sparse_linear(x: np.ndarray, weight: SparseWeight, bias: np.ndarray | None) -> np.ndarray:
    """The op's computation: the native CPU kernel, else a dense NumPy fallback."""
    global _warned_fallback
    from . import cpu
    try:
        return cpu.sparse_linear(x, weight, bias)
    except TrtEdgeError as exc:
        if cpu.is_available():
            raise
        if not _warned_fallback:
            log.warning("SparseLinear runs densely in NumPy (slow): %s", exc)
            _warned_fallback = True
        w = to_dense(weight).astype(np.float32)
        y = np.asarray(x, dtype=np.float32) @ w.T
        return y + bias if bias is not None else y


def register_custom_op() -> str:
    """Register the ``SparseLinear`` Python op with onnxruntime-extensions (once).

    Returns the path of the onnxruntime-extensions library to register in a session.
    """
    global _registered
    ortx = require("onnxruntime_extensions", "running SparseLinear models in ONNX Runtime")
    with _register_lock:
        if not _registered:
            dt = ortx.PyCustomOpDef

            @ortx.onnx_op(op_type=OP_TYPE,
                          inputs=[dt.dt_float, dt.dt_float, dt.dt_int32, dt.dt_int32, dt.dt_float],
                          outputs=[dt.dt_float],
                          attrs={"format": dt.dt_string, "block_rows": dt.dt_int64,
                                 "block_cols": dt.dt_int64, "in_features": dt.dt_int64,
                                 "out_features": dt.dt_int64})
            def _sparse_linear_op(x: np.ndarray, values: np.ndarray, col_idx: np.ndarray,
                                  row_ptr: np.ndarray, bias: np.ndarray, **attrs: Any) -> np.ndarray:
                weight = weight_from_node_arrays(
                    values, col_idx.astype(np.int32, copy=False), row_ptr.astype(np.int32, copy=False),
                    fmt=str(attrs["format"]), block=(int(attrs["block_rows"]), int(attrs["block_cols"])),
                    shape=(int(attrs["out_features"]), int(attrs["in_features"])))
                return run_sparse_linear(x, weight, bias)

            _registered = True
    return str(ortx.get_library_path())


def for_onnxruntime(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose ``SparseLinear`` nodes use the onnxruntime-extensions domain."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graphs = [out.graph]
    while graphs:
        g = graphs.pop()
        for node in g.node:
            if node.op_type == OP_TYPE and node.domain == DOMAIN:
                node.domain = ORT_EXTENSIONS_DOMAIN
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
    domains = {o.domain for o in out.opset_import}
    if ORT_EXTENSIONS_DOMAIN not in domains:
        out.opset_import.append(onnx.helper.make_opsetid(ORT_EXTENSIONS_DOMAIN, 1))
    return out


def _as_model(model: onnx.ModelProto | str | os.PathLike[str]) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    from ..artifacts import load_onnx
    return load_onnx(model)


def make_session(model: onnx.ModelProto | str | os.PathLike[str], *, intra_op_threads: int = 0) -> Any:
    """An ``onnxruntime.InferenceSession`` (CPU) that runs ``SparseLinear`` nodes."""
    ort = require("onnxruntime", "running SparseLinear models")
    lib = register_custom_op()
    so = ort.SessionOptions()
    so.register_custom_ops_library(lib)
    so.intra_op_num_threads = intra_op_threads
    return ort.InferenceSession(for_onnxruntime(_as_model(model)).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
