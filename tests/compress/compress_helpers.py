"""Helpers of the compression tests."""
from __future__ import annotations

import numpy as np


def onnx_matches_torch(model, path, x, tol=(1e-4, 1e-4)):
    """The exported ONNX file vs the torch model on real inputs, in ONNX Runtime (optimizations off)."""
    from trt_edge.compress._train import predict
    from trt_edge.compress.report import ort_run
    got, ref = ort_run(path, x), predict(model, x)
    np.testing.assert_allclose(got, ref, rtol=tol[0], atol=tol[1])
    assert np.array_equal(got.argmax(1), ref.argmax(1))
