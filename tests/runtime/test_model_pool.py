"""``Model``: N execution instances lent by a pool, on the real MNIST CNN in ONNX Runtime.

The done-when checks of the runtime issue: 32 threads and asyncio hammer one
model for a bounded number of calls and every result equals the single-threaded
reference for the same input; no more than N instances ever run at once;
memory and threads do not grow across repeated ``infer_batch`` calls
(tracemalloc); ``close()`` during traffic waits for accepted calls and refuses
new ones with a clear RunnerError.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
import tracemalloc

import numpy as np
import pytest

from trt_edge.artifacts import sha256_file, sidecar_path, write_sidecar
from trt_edge.errors import ArtifactError, InvalidInputError, PoolTimeoutError, RunnerError
from trt_edge.runtime import Model, OnnxRuntimeRunner, OrtOptions

from runtime_tiny_models import linear_model

N = 3
OPTS = OrtOptions(intra_op_threads=1)


@pytest.fixture(scope="module")
def feeds(mnist_split):
    x, rng = mnist_split.x_test, np.random.default_rng(16)
    starts = rng.integers(0, len(x) - 4, 48)
    return [{"input": x[s:s + 1 + i % 4]} for i, s in enumerate(starts)]  # batches of 1..4


@pytest.fixture(scope="module")
def reference(mnist_onnx, feeds):
    with OnnxRuntimeRunner(mnist_onnx, OPTS) as r:
        return [r.infer(f)["logits"] for f in feeds]


def _count_concurrency(model, hold_s=0.0):
    """Wrap every instance's run to record how many run at once (checks the pool, not ORT).

    ``hold_s`` keeps each call inside a little longer (GIL released), so callers surely overlap.
    """
    state = {"inside": 0, "peak": 0, "used": set()}
    lock = threading.Lock()
    for inst in model._pool.instances:
        real = inst.run

        def run(feed, real=real, index=inst.index):
            with lock:
                state["inside"] += 1
                state["peak"] = max(state["peak"], state["inside"])
                state["used"].add(index)
            try:
                if hold_s:
                    time.sleep(hold_s)
                return real(feed)
            finally:
                with lock:
                    state["inside"] -= 1

        inst.run = run
    return state


def test_32_threads_and_asyncio_get_exactly_the_single_threaded_results(mnist_onnx, feeds, reference):
    with Model.load(mnist_onnx, instances=N, options=OPTS) as model:
        seen = _count_concurrency(model, hold_s=0.001)
        calls = 8
        results: dict[int, list] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(32)

        def caller(t):
            try:
                start.wait()
                results[t] = [(k, model.infer(feeds[k])) for k in ((t * calls + i) % len(feeds)
                                                                  for i in range(calls))]
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=caller, args=(t,)) for t in range(32)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert not errors, errors
        done = [kr for t in range(32) for kr in results[t]]
        assert len(done) == 32 * calls
        for k, res in done:  # same input -> bit-identical output: nothing crossed between callers
            np.testing.assert_array_equal(res.outputs["logits"], reference[k])
            assert 0 <= res.instance < N and res.timing.total_s >= res.timing.compute_s > 0

        async def main():
            return await asyncio.gather(*(model.infer_aio(feeds[i % len(feeds)]) for i in range(96)))

        for i, res in enumerate(asyncio.run(main())):
            np.testing.assert_array_equal(res.outputs["logits"], reference[i % len(feeds)])
        assert seen["peak"] <= N and seen["used"] <= set(range(N))
        stats = model.pool_stats()
        assert stats.instances == N and stats.peak_in_use <= N and stats.borrows == 32 * calls + 96
        assert stats.waits > 0  # 32 callers on 3 instances did queue: the bound was exercised


def test_repeated_infer_batch_grows_neither_memory_nor_threads(mnist_onnx, feeds, reference):
    with Model.load(mnist_onnx, instances=N, options=OPTS) as model:
        for _ in range(3):  # warm up: worker threads, ORT arenas, free lists
            model.infer_batch(feeds)
        threads = threading.active_count()
        tracemalloc.start()
        try:
            base = tracemalloc.take_snapshot()
            for _ in range(15):
                out = model.infer_batch(feeds)
            del out
            grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(base, "filename"))
        finally:
            tracemalloc.stop()
        # 15 rounds x 48 calls allocate ~2 MB of outputs and futures; what stays must be small
        assert grown < 64 * 1024, f"{grown} bytes still allocated after 15 infer_batch rounds"
        assert threading.active_count() == threads  # no thread pool per call
        for res, ref in zip(model.infer_batch(feeds), reference):  # order kept
            np.testing.assert_array_equal(res.outputs["logits"], ref)


def test_close_during_traffic_waits_for_accepted_calls_and_refuses_new_ones(mnist_onnx, feeds, reference):
    model = Model.load(mnist_onnx, instances=N, options=OPTS)
    ok, refused, other = [], [], []
    lock = threading.Lock()
    stop = threading.Event()

    def caller(t):
        i = t
        while not stop.is_set():
            k = i % len(feeds)
            i += 7
            try:
                res = model.infer(feeds[k])
            except RunnerError as exc:
                with lock:
                    refused.append(str(exc))
                return
            except BaseException as exc:  # noqa: BLE001
                with lock:
                    other.append(exc)
                return
            with lock:
                ok.append((k, res))

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 30
    while len(ok) < 100 and time.monotonic() < deadline:
        time.sleep(0.005)
    accepted = [model.infer_async(feeds[i]) for i in range(24)]
    model.close()
    after_close = model.pool_stats()
    stop.set()
    for th in threads:
        th.join(30)
    assert not other, other
    assert after_close.in_use == 0 and after_close.closed and not model.runner.is_active
    assert len(refused) == 16 and all("closing" in msg for msg in refused)
    assert all(f.done() and f.exception() is None for f in accepted)  # accepted before close: done
    for f, k in zip(accepted, range(24)):
        np.testing.assert_array_equal(f.result().outputs["logits"], reference[k])
    for k, res in ok:
        np.testing.assert_array_equal(res.outputs["logits"], reference[k])
    with pytest.raises(RunnerError, match="closing"):
        model.infer_async(feeds[0])
    model.close()  # a second close is a no-op


def test_timeouts_on_a_busy_pool_and_a_close_that_cannot_finish_yet(rng):
    w, b = rng.standard_normal((6, 4)), rng.standard_normal(4)
    x = {"input": rng.standard_normal((2, 6)).astype(np.float32)}
    model = Model.load(linear_model(w, b), instances=1)
    release, entered = threading.Event(), threading.Event()
    inst = model._pool.instances[0]
    real = inst.run

    def slow(feed):
        entered.set()
        release.wait(10)
        return real(feed)

    inst.run = slow
    busy = model.infer_async(x)
    assert entered.wait(10)
    with pytest.raises(PoolTimeoutError, match="within 0.05 s"):
        model.infer(x, timeout=0.05)
    with pytest.raises(PoolTimeoutError, match="still running"):
        model.close(timeout=0.05)
    with pytest.raises(RunnerError, match="closing"):
        model.infer(x)
    release.set()
    model.close()
    np.testing.assert_allclose(busy.result().outputs["logits"],
                               x["input"] @ w.astype(np.float32) + b.astype(np.float32), rtol=1e-5, atol=1e-5)
    assert not model.runner.is_active


def test_signature_identity_and_backend_facts(mnist_onnx, rng, tmp_path):
    with Model.load(mnist_onnx, name="mnist", version="7") as model:
        sig = model.signature
        assert [s.name for s in sig.inputs] == ["input"] and sig.inputs[0].batch_axis == 0
        assert sig.inputs[0].element_shape == (1, 28, 28) and sig.outputs[0].batch_axis == 0
        assert (sig.batch.min, sig.batch.opt, sig.batch.max) == (1, 1, None)
        ident = model.identity
        assert (ident.name, ident.version, ident.sha256) == ("mnist", "7", sha256_file(mnist_onnx))
        assert ident.sidecar_kind == "onnx-export"
        info = model.backend_info
        assert (info.backend, info.provider, info.precision, info.device) == \
            ("onnxruntime", "CPUExecutionProvider", "fp32", "cpu")
        desc = model.describe()
        assert desc.instances == 1 and desc.memory.instances == 1 and desc.runner["backend"] == "onnxruntime"
    fixed = tmp_path / "fixed.onnx"
    import onnx
    onnx.save(linear_model(rng.standard_normal((6, 4)), rng.standard_normal(4), batch=2), str(fixed))
    with Model.load(fixed) as model:
        assert (model.signature.batch.min, model.signature.batch.max) == (2, 2)
        with pytest.raises(InvalidInputError, match="size 3 on axis 0"):
            model.infer({"input": np.zeros((3, 6), np.float32)})
    write_sidecar(fixed, "onnx-export")
    side = json.loads(sidecar_path(fixed).read_text())
    assert "created" not in side and side["provenance"]["created"]  # the time is not hashed
    fixed.write_bytes(fixed.read_bytes() + b"\0")  # the file no longer matches its sidecar
    with pytest.raises(ArtifactError, match="does not match its sidecar"):
        Model.load(fixed)


def test_a_bad_feed_in_a_batch_fails_before_any_work(mnist_onnx, feeds):
    with Model.load(mnist_onnx, instances=2, options=OPTS) as model:
        bad = list(feeds[:5]) + [{"input": feeds[0]["input"].astype(np.float64)}]
        with pytest.raises(InvalidInputError, match="Feed #5 .*astype"):
            model.infer_batch(bad)
        assert model.pool_stats().borrows == 0


class _SerialRunner(OnnxRuntimeRunner):
    """A runner that declares itself not thread-safe (as a LiteRT interpreter is)."""

    thread_safe = False
    made: list = []

    def activate_impl(self):
        super().activate_impl()
        _SerialRunner.made.append(self)


def test_runners_that_are_not_thread_safe_get_one_runner_per_instance(mnist_onnx, feeds, reference):
    _SerialRunner.made.clear()
    model = Model.load(mnist_onnx, instances=2, runner_factory=lambda: _SerialRunner(mnist_onnx, OPTS))
    assert len(_SerialRunner.made) == 2 and len({id(r) for r in _SerialRunner.made}) == 2
    for res, ref in zip(model.infer_batch(feeds[:12]), reference[:12]):
        np.testing.assert_array_equal(res.outputs["logits"], ref)
    model.close()
    assert not any(r.is_active for r in _SerialRunner.made)


def test_close_without_waiting_releases_the_backend_when_the_last_call_returns(rng):
    w, b = rng.standard_normal((6, 4)), rng.standard_normal(4)
    x = {"input": rng.standard_normal((2, 6)).astype(np.float32)}
    model = Model.load(linear_model(w, b), instances=2)
    release, entered = threading.Event(), threading.Event()
    slow_inst = model._pool.instances[-1]  # the pool lends the last free instance first
    real = slow_inst.run
    closed = []

    def slow(feed):
        entered.set()
        release.wait(10)
        return real(feed)

    slow_inst.run = slow
    for inst in model._pool.instances:
        inst.close = lambda inst=inst: closed.append(inst.index)
    busy = model.infer_async(x)
    assert entered.wait(10)
    model.close(wait=False)  # returns at once: one call is still running
    assert model.runner.is_active and closed == [0]  # the free instance is closed, the busy one not
    with pytest.raises(RunnerError, match="closing"):
        model.infer(x)
    release.set()
    assert busy.result(10).outputs["logits"].shape == (2, 4)
    deadline = time.monotonic() + 10
    while model.runner.is_active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not model.runner.is_active and sorted(closed) == [0, 1]


def test_runner_infer_batch_keeps_its_worker_threads_between_calls(mnist_onnx, feeds, reference):
    with OnnxRuntimeRunner(mnist_onnx, OPTS) as r:
        r.infer_batch(feeds[:6], num_threads=3)
        threads = threading.active_count()
        for _ in range(5):
            for out, ref in zip(r.infer_batch(feeds, num_threads=3), reference):
                np.testing.assert_array_equal(out["logits"], ref)
        assert threading.active_count() == threads
    assert threading.active_count() < threads  # deactivate stopped them
