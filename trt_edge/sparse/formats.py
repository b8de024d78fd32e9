"""Sparse weight formats: dense (pruned) <-> CSR / BSR, validation, sizes.

A weight is the ``[out_features, in_features]`` matrix ``W`` of ``Y = X @ W^T + b``
(torch ``nn.Linear.weight`` layout; for an ONNX ``MatMul(X, B)`` it is ``B^T``).

* :class:`CsrWeight`: unstructured; ``row_ptr[N+1]``, ``col_idx[nnz]``, ``values[nnz]``.
* :class:`BsrWeight`: blocks of ``br x bc``; ``row_ptr[ceil(N/br)+1]`` over block rows,
  ``col_idx[nnzb]`` block columns, ``values[nnzb, br, bc]``. A block is stored when any
  of its entries is non-zero; blocks overhanging N/K hold zeros there.

Indices are int32 (what the CUDA kernels and the TensorRT plugin take); column
indices are sorted within each row. Conversion round-trips exactly
(``to_dense(to_csr(w)) == w`` bit for bit).

* :class:`PackedCsrWeight`: a CPU-only layout (never written to ONNX): the columns are cut
  into panels of at most 65536 columns and each panel is CSR with ``uint16`` column
  indices relative to the panel, values FP32 or FP16. 6 (or 4) bytes per non-zero instead
  of 8: at batch 1 the kernel is bound by reading these bytes. Built from CSR by
  :func:`to_packed_csr`; :mod:`trt_edge.sparse.select` decides by timing whether to use it.
"""
from __future__ import annotations

import dataclasses
from typing import Union

import numpy as np

from ..errors import InvalidInputError

#: Block shapes with compiled fast paths in the CPU library and instantiated CUDA kernels.
#: 1xC blocks keep one output row and C consecutive inputs (contiguous X loads);
#: Rx1 blocks keep R output rows (coalesced along the output on the GPU).
BLOCK_SHAPES: tuple[tuple[int, int], ...] = ((1, 4), (1, 8), (2, 2), (2, 4), (4, 1), (4, 4), (8, 1))

_VALUE_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


class _CompressedArrays:
    """What the layouts share: row pointers, column indices and the stored values."""

    row_ptr: np.ndarray
    col_idx: np.ndarray
    values: np.ndarray

    @property
    def nnz(self) -> int:
        """Non-zero entries (every stored value, for the element-wise layouts)."""
        return int(self.values.size)

    @property
    def stored(self) -> int:
        """Number of stored values (== nnz for CSR; whole blocks for BSR)."""
        return int(self.values.size)

    @property
    def nbytes(self) -> int:
        return int(self.row_ptr.nbytes + self.col_idx.nbytes + self.values.nbytes)


@dataclasses.dataclass(frozen=True)
class CsrWeight(_CompressedArrays):
    shape: tuple[int, int]
    row_ptr: np.ndarray
    col_idx: np.ndarray
    values: np.ndarray

    format = "csr"
    block = (1, 1)

    def astype(self, dtype: np.dtype | type) -> "CsrWeight":
        return dataclasses.replace(self, values=self.values.astype(dtype))


@dataclasses.dataclass(frozen=True)
class BsrWeight(_CompressedArrays):
    shape: tuple[int, int]
    block: tuple[int, int]
    row_ptr: np.ndarray
    col_idx: np.ndarray
    values: np.ndarray  # [nnzb, br, bc]

    format = "bsr"

    @property
    def nnz(self) -> int:
        """Non-zero entries inside the stored blocks."""
        return int(np.count_nonzero(self.values))

    @property
    def num_blocks(self) -> int:
        return int(self.values.shape[0])

    def astype(self, dtype: np.dtype | type) -> "BsrWeight":
        return dataclasses.replace(self, values=self.values.astype(dtype))


#: Widest column panel of a :class:`PackedCsrWeight` (uint16 indices inside a panel).
MAX_PANEL_COLS = 65536


@dataclasses.dataclass(frozen=True)
class PackedCsrWeight(_CompressedArrays):
    """CSR in column panels with uint16 in-panel column indices (CPU kernels only).

    ``row_ptr`` is ``[P, N+1]`` int32 of global offsets into ``col_idx``/``values``: panel
    ``p`` (columns ``[p*panel_cols, (p+1)*panel_cols)``) holds row ``n``'s entries at
    ``row_ptr[p, n]:row_ptr[p, n+1]``, and each panel starts where the previous one ends.
    ``values`` is float32 or float16 (FP16 storage; activations and accumulation stay FP32).
    """

    shape: tuple[int, int]
    panel_cols: int
    row_ptr: np.ndarray  # [P, N+1] int32
    col_idx: np.ndarray  # [nnz] uint16
    values: np.ndarray   # [nnz] float32 | float16

    format = "pcsr"
    block = (1, 1)

    @property
    def num_panels(self) -> int:
        return int(self.row_ptr.shape[0])


SparseWeight = Union[CsrWeight, BsrWeight]
AnyCpuWeight = Union[CsrWeight, BsrWeight, PackedCsrWeight]


def _check_dense(dense: np.ndarray) -> np.ndarray:
    dense = np.asarray(dense)
    if dense.ndim != 2:
        raise InvalidInputError(f"A sparse weight must be 2-D [out_features, in_features], got shape "
                                f"{dense.shape}.")
    if dense.dtype not in _VALUE_DTYPES:
        if not np.issubdtype(dense.dtype, np.floating):
            raise InvalidInputError(f"Weight dtype must be float32 or float16, got {dense.dtype}.")
        dense = dense.astype(np.float32)
    if max(dense.shape) >= 2**31:
        raise InvalidInputError(f"Weight shape {dense.shape} exceeds int32 indexing.")
    return dense


def _check_block(block: tuple[int, int]) -> tuple[int, int]:
    br, bc = (int(block[0]), int(block[1]))
    if not (1 <= br <= 32 and 1 <= bc <= 32):
        raise InvalidInputError(f"Block shape must be within 1..32 x 1..32, got {block}.")
    return br, bc


def sparsity(dense: np.ndarray) -> float:
    """Fraction of exactly-zero entries (0.0 for an empty matrix)."""
    dense = np.asarray(dense)
    return 0.0 if dense.size == 0 else 1.0 - np.count_nonzero(dense) / dense.size


def to_csr(dense: np.ndarray) -> CsrWeight:
    """Compress ``dense`` [N, K] to CSR (exact zeros dropped, column order kept)."""
    dense = _check_dense(dense)
    n, _ = dense.shape
    rows, cols = np.nonzero(dense)  # row-major order: rows sorted, columns sorted within a row
    row_ptr = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=row_ptr[1:])
    return CsrWeight((int(dense.shape[0]), int(dense.shape[1])), row_ptr, cols.astype(np.int32),
                     np.ascontiguousarray(dense[rows, cols]))


def _blocked(dense: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """``dense`` zero-padded and viewed as [nbr, nbc, br, bc]."""
    br, bc = block
    n, k = dense.shape
    nbr, nbc = -(-n // br), -(-k // bc)
    padded = np.zeros((nbr * br, nbc * bc), dtype=dense.dtype)
    padded[:n, :k] = dense
    return padded.reshape(nbr, br, nbc, bc).transpose(0, 2, 1, 3)


def to_bsr(dense: np.ndarray, block: tuple[int, int]) -> BsrWeight:
    """Compress ``dense`` [N, K] to BSR with ``block`` = (br, bc); all-zero blocks dropped."""
    dense = _check_dense(dense)
    br, bc = _check_block(block)
    blocks = _blocked(dense, (br, bc))
    nbr = blocks.shape[0]
    keep = np.any(blocks != 0, axis=(2, 3))
    brow, bcol = np.nonzero(keep)
    row_ptr = np.zeros(nbr + 1, dtype=np.int32)
    np.cumsum(np.bincount(brow, minlength=nbr), out=row_ptr[1:])
    values = np.ascontiguousarray(blocks[brow, bcol])
    return BsrWeight((int(dense.shape[0]), int(dense.shape[1])), (br, bc), row_ptr,
                     bcol.astype(np.int32), values.reshape(-1, br, bc))


def default_panel_cols(in_features: int) -> int:
    """One panel when the columns fit uint16 indices, else panels of 16384 columns (64 KiB of
    FP32 activations per panel: the part of x a panel gathers from stays in L1/L2)."""
    return max(1, in_features) if in_features <= MAX_PANEL_COLS else 16384


def to_packed_csr(weight: "CsrWeight | np.ndarray", panel_cols: int | None = None,
                  value_dtype: np.dtype | type | None = None) -> PackedCsrWeight:
    """Repack CSR (or a dense matrix) into :class:`PackedCsrWeight`.

    ``panel_cols``: 1..65536 (default :func:`default_panel_cols`). ``value_dtype``: keep the
    values' dtype (default) or ``np.float16`` to halve the value bytes; FP16 rounding changes
    the weights (relative error <= 2**-11), and values beyond the FP16 range are refused.
    """
    csr = weight if isinstance(weight, CsrWeight) else to_csr(weight)
    validate(csr)
    n, k = csr.shape
    t = int(panel_cols) if panel_cols is not None else default_panel_cols(k)
    if not 1 <= t <= MAX_PANEL_COLS:
        raise InvalidInputError(f"panel_cols must be within 1..{MAX_PANEL_COLS}, got {panel_cols}.")
    dtype = np.dtype(value_dtype) if value_dtype is not None else csr.values.dtype
    if dtype not in _VALUE_DTYPES:
        raise InvalidInputError(f"Packed CSR values must be float32 or float16, got {dtype}.")
    values = csr.values
    if dtype == np.float16 and values.dtype != np.float16:
        big = np.abs(values) > np.finfo(np.float16).max
        if np.any(big):
            raise InvalidInputError(f"{int(big.sum())} weight values exceed the FP16 range (65504): "
                                    "keep FP32 values (value_dtype=None).")
    panels = max(1, -(-k // t))
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(csr.row_ptr))
    panel = csr.col_idx.astype(np.int64) // t
    order = np.argsort(panel, kind="stable")  # panel-major; row-major, columns sorted inside
    counts = np.bincount(panel * n + rows, minlength=panels * n)
    cum = np.zeros(panels * n + 1, dtype=np.int64)
    np.cumsum(counts, out=cum[1:])
    row_ptr = cum[np.arange(panels)[:, None] * n + np.arange(n + 1)[None, :]].astype(np.int32)
    col = (csr.col_idx[order] - panel[order] * t).astype(np.uint16)
    return PackedCsrWeight((n, k), t, np.ascontiguousarray(row_ptr), col,
                           np.ascontiguousarray(values[order].astype(dtype)))


def packed_to_csr(weight: PackedCsrWeight) -> CsrWeight:
    """The CSR matrix a packed weight holds (values in the packed dtype)."""
    validate_packed(weight)
    n, k = weight.shape
    t, panels = weight.panel_cols, weight.num_panels
    rows = np.concatenate([np.repeat(np.arange(n), np.diff(weight.row_ptr[p])) for p in range(panels)]) \
        if weight.nnz else np.zeros(0, np.int64)
    pan = np.repeat(np.arange(panels), weight.row_ptr[:, -1] - weight.row_ptr[:, 0])
    cols = weight.col_idx.astype(np.int64) + pan * t
    order = np.lexsort((cols, rows))
    row_ptr = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=row_ptr[1:])
    return CsrWeight((n, k), row_ptr, cols[order].astype(np.int32),
                     np.ascontiguousarray(weight.values[order]))


def validate_packed(weight: PackedCsrWeight) -> None:
    """Raise :class:`InvalidInputError` unless the packed arrays are well formed."""
    n, k = weight.shape
    t = weight.panel_cols
    if not 1 <= t <= MAX_PANEL_COLS:
        raise InvalidInputError(f"panel_cols must be within 1..{MAX_PANEL_COLS}, got {t}.")
    panels = max(1, -(-k // t))
    rp, ci, v = weight.row_ptr, weight.col_idx, weight.values
    if rp.dtype != np.int32 or ci.dtype != np.uint16:
        raise InvalidInputError("Packed CSR needs int32 row_ptr and uint16 col_idx.")
    if v.dtype not in _VALUE_DTYPES or v.ndim != 1:
        raise InvalidInputError(f"values must be 1-D float32 or float16, got {v.dtype} {v.shape}.")
    flat = rp.reshape(-1) if rp.ndim == 2 else rp
    if rp.shape != (panels, n + 1) or flat[0] != 0 or flat[-1] != v.size or ci.shape != v.shape:
        raise InvalidInputError(f"row_ptr must be [{panels}, {n + 1}] from 0 to nnz={v.size}, and "
                                "col_idx as long as values.")
    if np.any(np.diff(rp, axis=1) < 0) or np.any(rp[1:, 0] != rp[:-1, -1]):
        raise InvalidInputError("row_ptr must not decrease within a panel, and each panel must start "
                                "where the previous one ends.")
    widths = np.minimum(t, k - np.arange(panels) * t)
    pan = np.repeat(np.arange(panels), rp[:, -1] - rp[:, 0])
    if v.size and np.any(ci.astype(np.int64) >= widths[pan]):
        raise InvalidInputError("a packed column index lies outside its panel.")


def convert(dense: np.ndarray, fmt: str, block: tuple[int, int] | None = None) -> SparseWeight:
    """``to_csr`` for ``fmt == "csr"``, ``to_bsr(dense, block)`` for ``"bsr"``."""
    if fmt == "csr":
        return to_csr(dense)
    if fmt == "bsr":
        if block is None:
            raise InvalidInputError("BSR needs a block shape, e.g. block=(1, 4).")
        return to_bsr(dense, block)
    raise InvalidInputError(f"Unknown sparse format '{fmt}': use 'csr' or 'bsr'.")


def to_dense(weight: SparseWeight) -> np.ndarray:
    """Expand back to the dense [N, K] matrix (exact inverse of the conversion)."""
    validate(weight)
    n, k = weight.shape
    if isinstance(weight, CsrWeight):
        out = np.zeros((n, k), dtype=weight.values.dtype)
        rows = np.repeat(np.arange(n), np.diff(weight.row_ptr))
        out[rows, weight.col_idx] = weight.values
        return out
    br, bc = weight.block
    nbr, nbc = -(-n // br), -(-k // bc)
    blocks = np.zeros((nbr, nbc, br, bc), dtype=weight.values.dtype)
    brow = np.repeat(np.arange(nbr), np.diff(weight.row_ptr))
    blocks[brow, weight.col_idx] = weight.values
    return blocks.transpose(0, 2, 1, 3).reshape(nbr * br, nbc * bc)[:n, :k].copy()


def validate(weight: SparseWeight) -> None:
    """Raise :class:`InvalidInputError` unless the arrays form a well-formed matrix.

    Checks dtypes, array lengths, ``row_ptr`` monotone from 0 to the value count, and
    column indices in range and strictly increasing within a row (what the kernels rely on).
    """
    n, k = weight.shape
    br, bc = weight.block
    rows, cols = -(-n // br), -(-k // bc)
    rp, ci, v = weight.row_ptr, weight.col_idx, weight.values
    if rp.dtype != np.int32 or ci.dtype != np.int32:
        raise InvalidInputError("row_ptr and col_idx must be int32.")
    if v.dtype not in _VALUE_DTYPES:
        raise InvalidInputError(f"values must be float32 or float16, got {v.dtype}.")
    count = v.shape[0] if v.ndim else 0
    expected_v = (count,) if isinstance(weight, CsrWeight) else (count, br, bc)
    if v.shape != expected_v:
        raise InvalidInputError(f"values has shape {v.shape}, expected {expected_v}.")
    if rp.shape != (rows + 1,) or rp[0] != 0 or rp[-1] != count or np.any(np.diff(rp) < 0):
        raise InvalidInputError("row_ptr must have one entry per (block) row plus one, start at 0, "
                                "never decrease and end at the number of stored values.")
    if ci.shape != (count,) or (count and (ci.min() < 0 or ci.max() >= cols)):
        raise InvalidInputError(f"col_idx must have {count} entries in [0, {cols}).")
    if count > 1:
        same_row = np.repeat(np.arange(rows), np.diff(rp))
        d = np.diff(ci.astype(np.int64))
        if np.any((d <= 0) & (same_row[1:] == same_row[:-1])):
            raise InvalidInputError("col_idx must be strictly increasing within each row.")
