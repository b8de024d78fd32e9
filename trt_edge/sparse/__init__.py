"""Sparse linear layers: formats, the native CPU kernel, the NumPy reference, reports.

``formats`` converts dense (pruned) weights to CSR/BSR and back; ``cpu`` runs the native
CPU kernel (ctypes); ``reference`` is the NumPy oracle; ``report`` summarises per-layer
sparsity; ``select`` picks a format/block shape by measured speed; ``ort`` hosts the
``SparseLinear`` ONNX op in ONNX Runtime (via onnxruntime-extensions). The CUDA kernels and
the TensorRT plugin live in ``csrc/sparse`` (see its README).
"""
from .formats import BLOCK_SHAPES, BsrWeight, CsrWeight, SparseWeight, convert, sparsity, to_bsr, \
    to_csr, to_dense, validate
from .reference import OP_TYPE, sparse_linear_reference

__all__ = ["BLOCK_SHAPES", "BsrWeight", "CsrWeight", "SparseWeight", "convert", "sparsity", "to_bsr",
           "to_csr", "to_dense", "validate", "OP_TYPE", "sparse_linear_reference"]
