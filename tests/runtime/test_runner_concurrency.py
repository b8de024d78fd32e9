"""Concurrency of the ONNX Runtime runner on real models: batch, futures, asyncio, IO binding."""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from trt_edge.numerics import FP32_EXACT, assert_close
from trt_edge.runtime import OnnxRuntimeRunner, OrtOptions

from runtime_tiny_models import linear_model


@pytest.fixture(scope="module")
def mnist_feeds(mnist_split):
    x = mnist_split.x_test
    return [{"input": x[i * 8:(i + 1) * 8]} for i in range(12)]


@pytest.fixture(scope="module")
def mnist_reference(mnist_onnx, mnist_feeds):
    with OnnxRuntimeRunner(mnist_onnx, OrtOptions(intra_op_threads=1)) as r:
        return [r.infer(f) for f in mnist_feeds]


def _same(results, reference):
    assert len(results) == len(reference)
    for got, want in zip(results, reference):
        assert_close(got, want, FP32_EXACT)


@pytest.mark.parametrize("threads", [1, 3])
def test_infer_batch_keeps_order_and_values(mnist_onnx, mnist_feeds, mnist_reference, threads):
    with OnnxRuntimeRunner(mnist_onnx, OrtOptions(intra_op_threads=1)) as r:
        _same(r.infer_batch(mnist_feeds, num_threads=threads), mnist_reference)


def test_batch_threads_really_overlap(mnist_onnx, mnist_feeds):
    """With a thread-safe runner, two callers are inside ORT at the same time (no hidden lock)."""
    inside, peak, lock = 0, 0, threading.Lock()
    with OnnxRuntimeRunner(mnist_onnx, OrtOptions(intra_op_threads=1)) as r:
        real = r.infer_impl

        def counting(feed):
            nonlocal inside, peak
            with lock:
                inside += 1
                peak = max(peak, inside)
            try:
                return real(feed)
            finally:
                with lock:
                    inside -= 1

        r.infer_impl = counting  # type: ignore[method-assign]
        r.infer_batch(mnist_feeds * 4, num_threads=4)
    assert peak >= 2


def test_futures_and_asyncio(mnist_onnx, mnist_feeds, mnist_reference):
    with OnnxRuntimeRunner(mnist_onnx, OrtOptions(intra_op_threads=1)) as r:
        r.max_async_workers = 3
        futures = [r.infer_async(f) for f in mnist_feeds]
        _same([f.result(timeout=60) for f in futures], mnist_reference)

        async def main():
            return await asyncio.gather(*(r.infer_aio(f) for f in mnist_feeds))

        _same(asyncio.run(main()), mnist_reference)


def test_deactivate_waits_for_submitted_work(mnist_onnx, mnist_feeds):
    r = OnnxRuntimeRunner(mnist_onnx, OrtOptions(intra_op_threads=1)).activate()
    futures = [r.infer_async(f) for f in mnist_feeds]
    r.deactivate()
    assert all(f.done() and f.exception() is None for f in futures)


@pytest.mark.parametrize("intra", [1, 2])
def test_io_binding_matches_plain_run(mnist_onnx, mnist_feeds, mnist_reference, intra):
    with OnnxRuntimeRunner(mnist_onnx, OrtOptions(io_binding=True, intra_op_threads=intra)) as r:
        # the logits shape follows from the input's batch: ORT writes into our array directly
        assert r.output_shapes_for(mnist_feeds[0]) == {"logits": (8, 10)}
        _same(r.infer_batch(mnist_feeds, num_threads=2), mnist_reference)
        out = r.infer(mnist_feeds[0])["logits"]
        assert out.flags.owndata and out.flags.writeable


def test_io_binding_survives_a_wrong_declared_output_shape(rng):
    w, b = rng.standard_normal((6, 4)), rng.standard_normal(4)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    model = linear_model(w, b, declared_out=3)  # the graph says 3 columns, computes 4
    with OnnxRuntimeRunner(model, OrtOptions(io_binding=True)) as r:
        for _ in range(2):
            out = r.infer({"input": x})["logits"]
            np.testing.assert_allclose(out, x @ w.astype(np.float32) + b.astype(np.float32), rtol=1e-5, atol=1e-5)


def test_minilm_batch_api_and_shared_dims(minilm_onnx, minilm_bundle):
    sentences = ["The robot stops at the red light.", "A drone maps the warehouse shelves.",
                 "Lidar points are clustered into obstacles.", "The gripper closes on the bottle."]
    feeds = [minilm_bundle.tokenize([s]) for s in sentences]
    feeds = [{k: f[k] for k in ("input_ids", "attention_mask")} for f in feeds]
    with OnnxRuntimeRunner(minilm_onnx, OrtOptions(intra_op_threads=1)) as r:
        seq = [r.infer(f) for f in feeds]
        par = r.infer_batch(feeds, num_threads=2)
        _same(par, seq)
        norms = np.linalg.norm(np.concatenate([o["embeddings"] for o in par]), axis=1)
        np.testing.assert_allclose(norms, 1.0, rtol=1e-5)  # L2-normalised sentence embeddings
        bad = dict(feeds[0], attention_mask=np.ones((2, feeds[0]["input_ids"].shape[1]), np.int64))
        from trt_edge.errors import InvalidInputError
        with pytest.raises(InvalidInputError, match="Dimension 'batch'"):
            r.infer(bad)


def test_io_binding_default_is_off_on_the_cpu(mnist_onnx):
    with OnnxRuntimeRunner(mnist_onnx) as r:
        assert OrtOptions().io_binding is None and not r.uses_io_binding
        assert r.describe()["io_binding"] is False
    with OnnxRuntimeRunner(mnist_onnx, OrtOptions(io_binding=True)) as r:
        assert r.uses_io_binding and r.describe()["io_binding"] is True
