"""The TensorRT runtime's instance pool, against TEST DOUBLES of TensorRT's runtime and pycuda.

Checks our orchestration only (fake_trt_runtime.py says what the doubles do):
N execution contexts made once at load, reused by every call, never more under
concurrency, and all freed at close; the signature from the optimization
profile; the GPU timing hook leaving shared options alone. Real engines:
tests/trt/test_trt_engines.py (tensorrt tier).
"""
from __future__ import annotations

import concurrent.futures
import sys

import numpy as np
import pytest

from fake_trt_runtime import ENGINE_BYTES, install_fake_runtime, make_fake_pycuda
from trt_edge.errors import InvalidInputError, RunnerError


@pytest.fixture
def fake_gpu(fake_trt, monkeypatch):
    trt = fake_trt(version="10.3.0")
    pkg, drv = make_fake_pycuda()
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    stats = install_fake_runtime(trt, drv)
    return stats, drv


@pytest.fixture
def plan(tmp_path):
    path = tmp_path / "double.plan"
    path.write_bytes(ENGINE_BYTES)
    return path


def _feeds(n, rng):
    return [{"x": rng.standard_normal((int(rng.integers(1, 9)), 4)).astype(np.float32)} for _ in range(n)]


def test_n_contexts_made_once_reused_under_threads_and_freed(fake_gpu, plan, rng, caplog):
    from trt_edge.runtime import Model

    stats, drv = fake_gpu
    model = Model.load(plan, instances=3)
    # three instances plus the scratch context that sized the output buffers (already freed)
    assert stats["contexts_created"] == 4 and stats["contexts_live"] == 3
    allocs = drv.stats["mem_alloc"]
    assert allocs == 3 * 2 and drv.stats["streams"] == 4  # x and y per instance; scratch stream
    sig = model.signature
    assert (sig.batch.min, sig.batch.opt, sig.batch.max) == (1, 4, 8)
    assert sig.inputs[0].batch_axis == 0 and sig.outputs[0].batch_axis == 0
    assert model.backend_info.backend == "tensorrt" and model.backend_info.device == "cuda:0"
    # per instance: x and y at the profile's max (8 x 4 float32, aligned to 256) + activation memory
    assert model.memory.per_instance_bytes == 2 * 256 + 1024 and model.memory.total_instance_bytes == 3 * 1536

    feeds = _feeds(96, rng)
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda f: model.infer(f), feeds))
    for feed, res in zip(feeds, results):
        np.testing.assert_array_equal(res.outputs["y"], 2 * feed["x"] + 1)  # no crossed outputs
    assert {r.instance for r in results} <= {0, 1, 2}
    assert stats["peak_executing"] <= 3 and stats["executes"] == 96
    assert stats["contexts_created"] == 4 and drv.stats["mem_alloc"] == allocs  # nothing made per call
    assert model.pool_stats().peak_in_use <= 3

    with pytest.raises(InvalidInputError, match="batch limits 1..8"):
        model.infer({"x": np.zeros((9, 4), np.float32)})
    model.close()
    assert stats["contexts_live"] == 0 and drv.stats["mem_free"] == drv.stats["mem_alloc"]
    with pytest.raises(RunnerError, match="closing"):
        model.infer(feeds[0])
    model.close()  # twice is fine


def test_plain_runner_api_uses_its_fixed_instances(fake_gpu, rng):
    from trt_edge.runtime.tensorrt import TensorRTRunner, TrtRunnerOptions

    stats, drv = fake_gpu
    feeds = _feeds(40, rng)
    with TensorRTRunner(ENGINE_BYTES, TrtRunnerOptions(instances=2)) as runner:
        assert stats["contexts_live"] == 0  # made on first use, not per thread
        outs = runner.infer_batch(feeds, num_threads=6)
        for feed, out in zip(feeds, outs):
            np.testing.assert_array_equal(out["y"], 2 * feed["x"] + 1)
        assert stats["contexts_live"] == 2 and stats["peak_executing"] <= 2
        runner.infer_batch(feeds, num_threads=6)  # a second batch makes nothing new
        assert stats["contexts_created"] == 3  # 2 instances + the scratch context
    assert stats["contexts_live"] == 0 and drv.stats["mem_free"] == drv.stats["mem_alloc"]


def test_gpu_timing_hook_leaves_the_shared_options_alone(fake_gpu, rng):
    from trt_edge.bench.trt_timing import benchmark_gpu
    from trt_edge.runtime.tensorrt import TensorRTRunner, TrtRunnerOptions

    stats, _ = fake_gpu
    with TensorRTRunner(ENGINE_BYTES, TrtRunnerOptions(cuda_graph=True)) as runner:
        # cuda_graph=False for this measurement only: no capture is attempted (there is no
        # driver here), and the runner's own option stays on for its other callers.
        report = benchmark_gpu(runner, {"x": np.ones((4, 4), np.float32)}, warmup=2, iterations=12,
                               cuda_graph=False, jetson_power=False, variants=False)
        assert runner.options.cuda_graph is True
        assert report["iterations"] == 12 and report["cuda_graph"] is False and report["batch"] == 4
        assert stats["executes"] == 14 and report["zero_copy"] is False
        assert all(inst.use_cuda_graph for inst in runner._instances)  # restored after the run
