"""NumPy reference of the ``SparseLinear`` op (the oracle for the CPU and CUDA kernels).

``sparse_linear_reference`` rebuilds W from the raw compressed arrays with its own
scatter (not :func:`trt_edge.sparse.formats.to_dense`) and multiplies in float64, so a
bug in the conversion code or in a kernel cannot hide behind the reference.
"""
from __future__ import annotations

import numpy as np

from .formats import CsrWeight, SparseWeight

#: The ONNX / TensorRT op name; the plugin, the ORT custom op and this reference share it.
OP_TYPE = "SparseLinear"


def _dense_float64(weight: SparseWeight) -> np.ndarray:
    n, k = weight.shape
    if isinstance(weight, CsrWeight):
        w = np.zeros((n, k), dtype=np.float64)
        for row in range(n):  # explicit loop: deliberately unlike formats.to_dense
            s, e = int(weight.row_ptr[row]), int(weight.row_ptr[row + 1])
            w[row, weight.col_idx[s:e]] = weight.values[s:e]
        return w
    br, bc = weight.block
    nbr, nbc = -(-n // br), -(-k // bc)
    w = np.zeros((nbr * br, nbc * bc), dtype=np.float64)
    for rb in range(nbr):
        for j in range(int(weight.row_ptr[rb]), int(weight.row_ptr[rb + 1])):
            cb = int(weight.col_idx[j])
            w[rb * br:(rb + 1) * br, cb * bc:(cb + 1) * bc] = weight.values[j]
    return w[:n, :k]


def sparse_linear_reference(x: np.ndarray, weight: SparseWeight,
                            bias: np.ndarray | None = None) -> np.ndarray:
    """``x @ W^T + bias`` in float64 for ``x`` of shape [..., K]; returns float64 [..., N]."""
    w = _dense_float64(weight)
    x64 = np.asarray(x, dtype=np.float64)
    y = x64.reshape(int(np.prod(x64.shape[:-1])), weight.shape[1]) @ w.T
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    return y.reshape(*x64.shape[:-1], weight.shape[0])


def abs_sum(x: np.ndarray, weight: SparseWeight, bias: np.ndarray | None = None) -> np.ndarray:
    """``|x| @ |W|^T + |bias|``: the scale of each output's rounding error (float64)."""
    w = np.abs(_dense_float64(weight))
    x64 = np.abs(np.asarray(x, dtype=np.float64))
    s = x64.reshape(int(np.prod(x64.shape[:-1])), weight.shape[1]) @ w.T
    if bias is not None:
        s = s + np.abs(np.asarray(bias, dtype=np.float64))
    return s.reshape(*x64.shape[:-1], weight.shape[0])


def error_bound(x: np.ndarray, weight: SparseWeight, bias: np.ndarray | None,
                reference: np.ndarray, tol: dict[str, float]) -> np.ndarray:
    """Per-output admissible error of a kernel against :func:`sparse_linear_reference`.

    A floating-point dot product's error is bounded by a multiple of the sum of the absolute
    terms (``abs_sum_rtol``: FP32 accumulation in any order), plus one rounding of the output
    to the storage type (``out_rtol``: 0 for FP32, 2^-11 for FP16) and a floor (``atol``).
    ``tol`` comes from the op's spec file (csrc/sparse/spec/sparse_linear.json). The inputs
    must be the values the kernel saw (e.g. already rounded to FP16).
    """
    return (tol["abs_sum_rtol"] * abs_sum(x, weight, bias)
            + tol["out_rtol"] * np.abs(reference) + tol["atol"])
