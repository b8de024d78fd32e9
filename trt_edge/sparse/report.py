"""Per-layer sparsity report of an ONNX model's linear layers (Gemm/MatMul constant weights).

For each weight: shape, non-zeros, sparsity, the fill of each candidate BSR block shape
(how much of a block format would be real data), and the bytes of dense, CSR (int32
indices) and the CPU kernels' packed CSR (uint16 indices) storage.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from .formats import BLOCK_SHAPES, default_panel_cols
from .select import block_fill, format_label


@dataclasses.dataclass(frozen=True)
class LayerSparsity:
    node: str
    op: str
    weight: str
    shape: tuple[int, int]  # [out_features, in_features]
    nnz: int
    sparsity: float
    block_fill: dict[str, float]
    dense_bytes: int
    csr_bytes: int
    packed_bytes: int = 0  # CPU packed CSR, same value dtype (formats.to_packed_csr)

    def as_row(self) -> list[str]:
        best = max(self.block_fill.items(), key=lambda kv: kv[1]) if self.block_fill else ("-", 0.0)
        return [self.node, self.op, f"{self.shape[0]}x{self.shape[1]}", str(self.nnz),
                f"{100 * self.sparsity:.1f}%", f"{best[0]} ({100 * best[1]:.0f}%)",
                f"{self.dense_bytes / 1024:.1f}", f"{self.csr_bytes / 1024:.1f}",
                f"{self.packed_bytes / 1024:.1f}"]


def linear_weights(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str, np.ndarray]]:
    """(node, initializer name, W [out, in]) for every Gemm/MatMul with a constant 2-D weight."""
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type not in ("Gemm", "MatMul") or node.domain not in ("", "ai.onnx"):
            continue
        if len(node.input) < 2 or node.input[1] not in inits:
            continue
        b = numpy_helper.to_array(inits[node.input[1]])
        if b.ndim != 2 or not np.issubdtype(b.dtype, np.floating):
            continue
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        w = b if (node.op_type == "Gemm" and trans_b) else b.T
        out.append((node, node.input[1], w))
    return out


def sparsity_report(model: onnx.ModelProto | str | os.PathLike[str],
                    blocks: Sequence[tuple[int, int]] = BLOCK_SHAPES) -> list[LayerSparsity]:
    """One :class:`LayerSparsity` per linear layer, in graph order."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model))
    rows = []
    for node, name, w in linear_weights(model):
        nnz = int(np.count_nonzero(w))
        rows.append(LayerSparsity(
            node=node.name or name, op=node.op_type, weight=name,
            shape=(int(w.shape[0]), int(w.shape[1])), nnz=nnz,
            sparsity=1.0 - nnz / w.size if w.size else 0.0,
            block_fill={format_label("bsr", b): block_fill(w, b) for b in blocks},
            dense_bytes=int(w.nbytes), csr_bytes=int(nnz * (w.itemsize + 4) + 4 * (w.shape[0] + 1)),
            packed_bytes=_packed_bytes(w, nnz)))
    return rows


def _packed_bytes(w: np.ndarray, nnz: int) -> int:
    panels = max(1, -(-w.shape[1] // default_panel_cols(w.shape[1])))
    return int(nnz * (w.itemsize + 2) + 4 * panels * (w.shape[0] + 1))


def format_table(rows: Sequence[LayerSparsity]) -> str:
    """A plain-text table of the report (what the CLI prints)."""
    header = ["node", "op", "W [out x in]", "nnz", "sparsity", "best block (fill)", "dense KiB",
              "CSR KiB", "packed KiB"]
    table = [header] + [r.as_row() for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
