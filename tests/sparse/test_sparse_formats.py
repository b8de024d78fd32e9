"""Dense <-> CSR/BSR conversion, validation and the sparsity report."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from trt_edge.errors import InvalidInputError
from trt_edge.sparse import formats
from trt_edge.sparse.report import format_table, sparsity_report
from trt_edge.sparse.select import block_fill

from sparse_helpers import random_sparse

SHAPES = [(1, 1), (7, 5), (33, 17), (64, 100), (3, 1), (1, 9)]
BLOCKS = list(formats.BLOCK_SHAPES) + [(3, 5), (1, 1)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_round_trip_is_exact(fresh_rng, shape, density):
    w = random_sparse(fresh_rng, *shape, density)
    csr = formats.to_csr(w)
    formats.validate(csr)
    assert csr.nnz == np.count_nonzero(w)
    assert np.array_equal(formats.to_dense(csr), w)
    for block in BLOCKS:
        bsr = formats.to_bsr(w, block)
        formats.validate(bsr)
        assert np.array_equal(formats.to_dense(bsr), w), block
        assert bsr.nnz == np.count_nonzero(w)
        # Every stored block holds at least one non-zero; no block is dropped that had one.
        assert np.all(np.any(bsr.values.reshape(bsr.num_blocks, bsr.block[0] * bsr.block[1]) != 0, axis=1))


def test_empty_rows_and_fp16(fresh_rng):
    w = random_sparse(fresh_rng, 10, 12, 0.5)
    w[[0, 4, 9]] = 0
    csr = formats.to_csr(w.astype(np.float16))
    assert csr.values.dtype == np.float16
    assert csr.row_ptr[0] == csr.row_ptr[1] and csr.row_ptr[-2] == csr.row_ptr[-1]
    assert np.array_equal(formats.to_dense(csr), w.astype(np.float16))


def test_validate_rejects_broken_arrays():
    w = np.eye(4, dtype=np.float32)
    csr = formats.to_csr(w)
    bad_col = formats.CsrWeight(csr.shape, csr.row_ptr, np.array([0, 1, 2, 4], np.int32), csr.values)
    with pytest.raises(InvalidInputError, match="col_idx"):
        formats.validate(bad_col)
    bad_ptr = formats.CsrWeight(csr.shape, np.array([0, 2, 1, 3, 4], np.int32), csr.col_idx, csr.values)
    with pytest.raises(InvalidInputError, match="row_ptr"):
        formats.validate(bad_ptr)
    unsorted = formats.CsrWeight((1, 4), np.array([0, 2], np.int32), np.array([3, 1], np.int32),
                                 np.ones(2, np.float32))
    with pytest.raises(InvalidInputError, match="increasing"):
        formats.validate(unsorted)
    with pytest.raises(InvalidInputError, match="2-D"):
        formats.to_csr(np.ones((2, 2, 2), np.float32))
    with pytest.raises(InvalidInputError, match="Block shape"):
        formats.to_bsr(w, (0, 4))


def test_block_fill_and_sparsity():
    w = np.zeros((8, 8), np.float32)
    w[0:4, 0:4] = 1.0  # one dense 4x4 block
    assert formats.sparsity(w) == pytest.approx(0.75)
    assert block_fill(w, (4, 4)) == 1.0
    assert block_fill(w, (8, 1)) == pytest.approx(0.5)


def test_sparsity_report_on_onnx(fresh_rng):
    w1 = random_sparse(fresh_rng, 32, 48, 0.1)       # W [out, in]
    w2 = random_sparse(fresh_rng, 16, 32, 1.0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "B1"], ["h"], name="mm"),
         helper.make_node("Gemm", ["h", "B2"], ["y"], name="gemm", transB=1)],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 48])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(w1.T.copy(), "B1"), numpy_helper.from_array(w2, "B2")])
    rows = sparsity_report(helper.make_model(graph))
    assert [r.node for r in rows] == ["mm", "gemm"]
    assert rows[0].shape == (32, 48) and rows[1].shape == (16, 32)
    assert rows[0].nnz == np.count_nonzero(w1)
    assert rows[1].sparsity == pytest.approx(formats.sparsity(w2))
    assert "mm" in format_table(rows)
