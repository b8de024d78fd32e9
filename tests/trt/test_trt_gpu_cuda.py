"""gpu tier: the pycuda pieces on a real GPU (buffers, streams, events, CUDA graphs, threads, zero-copy).

Skipped without an NVIDIA GPU (tests/conftest.py) or without pycuda. Run with
``make test-gpu`` (``pytest -m gpu tests``).
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def ctx():
    pytest.importorskip("pycuda.driver", reason="pycuda is not installed (pip install 'trt-edge[tensorrt]')")
    from trt_edge.runtime.cuda import CudaContext

    c = CudaContext(0)
    yield c
    c.close()
    c.close()  # safe twice


def _roundtrip(n: int, rng: np.random.Generator) -> None:
    from trt_edge.runtime.cuda import DeviceBuffer, HostBuffer, Stream, memcpy_dtoh_async, memcpy_htod_async

    src = rng.standard_normal(n).astype(np.float32)
    with HostBuffer(src.nbytes) as hin, HostBuffer(src.nbytes) as hout, DeviceBuffer(src.nbytes) as dev, \
            Stream() as stream:
        hin.view(np.float32, (n,))[...] = src
        out = hout.view(np.float32, (n,))
        out[...] = np.nan  # poison
        memcpy_htod_async(dev.ptr, hin.view(np.float32, (n,)), stream)
        memcpy_dtoh_async(out, dev.ptr, stream)
        stream.synchronize()
        np.testing.assert_array_equal(out, src)


def test_pinned_and_device_buffers_roundtrip(ctx):
    rng = np.random.default_rng()
    with ctx:
        for n in (1, 257, 1 << 20):
            _roundtrip(n, rng)


def test_events_time_gpu_work(ctx):
    from trt_edge.runtime.cuda import DeviceBuffer, Event, HostBuffer, Stream, memcpy_htod_async

    with ctx, HostBuffer(64 << 20) as h, DeviceBuffer(64 << 20) as d, Stream() as s:
        start, end = Event(), Event()
        start.record(s)
        memcpy_htod_async(d.ptr, h.raw, s)
        end.record(s)
        end.synchronize()
        ms = end.elapsed_ms_since(start)
        assert 0.0 < ms < 10_000.0


def test_cuda_graph_replays_captured_copies(ctx):
    import pycuda.driver as cuda

    from trt_edge.runtime.cuda import CudaGraph, DeviceBuffer, HostBuffer, Stream, memcpy_dtoh_async, \
        memcpy_htod_async

    n = 4096
    rng = np.random.default_rng()
    with ctx, DeviceBuffer(n * 4) as a, DeviceBuffer(n * 4) as b, HostBuffer(n * 4) as h, Stream() as s:
        graph = CudaGraph.capture(s, lambda: cuda.memcpy_dtod_async(b.ptr, a.ptr, n * 4, s.pycuda))
        for _ in range(3):  # new data each time: the graph must copy it, not replay stale results
            data = rng.standard_normal(n).astype(np.float32)
            h.view(np.float32, (n,))[...] = data
            memcpy_htod_async(a.ptr, h.view(np.float32, (n,)), s)
            graph.launch(s)
            out = np.full(n, np.nan, np.float32)
            memcpy_dtoh_async(out, b.ptr, s)
            s.synchronize()
            np.testing.assert_array_equal(out, data)
        graph.close()
        graph.close()


def test_one_context_push_per_thread(ctx):
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            with ctx:
                _roundtrip(10_000 + seed, np.random.default_rng(seed))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_zero_copy_mapped_host_memory(ctx):
    import pycuda.driver as cuda

    from trt_edge.runtime.cuda import DeviceBuffer, HostBuffer, Stream, memcpy_htod_async

    if not ctx.can_map_host_memory:
        pytest.skip("this GPU cannot map host memory")
    n = 1000
    data = np.random.default_rng().standard_normal(n).astype(np.float32)
    with ctx, HostBuffer(n * 4, mapped=True) as mapped, DeviceBuffer(n * 4) as dev, HostBuffer(n * 4) as h, \
            Stream() as s:
        assert mapped.device_ptr != 0
        view = mapped.view(np.float32, (n,))
        view[...] = np.nan
        h.view(np.float32, (n,))[...] = data
        memcpy_htod_async(dev.ptr, h.view(np.float32, (n,)), s)
        # the GPU writes straight into host memory through the mapped pointer
        cuda.memcpy_dtod_async(mapped.device_ptr, dev.ptr, n * 4, s.pycuda)
        s.synchronize()
        np.testing.assert_array_equal(view, data)


def test_coexists_with_pytorch_in_the_primary_context(ctx):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch here has no CUDA")
    import pycuda.driver as cuda

    from trt_edge.runtime.cuda import DeviceBuffer

    t = torch.arange(1000, dtype=torch.float32, device="cuda")
    with ctx, DeviceBuffer(t.numel() * 4) as d:
        torch.cuda.synchronize()
        cuda.memcpy_dtod(d.ptr, t.data_ptr(), t.numel() * 4)  # same context: pointers interchange
        out = np.empty(1000, np.float32)
        cuda.memcpy_dtoh(out, d.ptr)
    np.testing.assert_array_equal(out, np.arange(1000, dtype=np.float32))
    assert float(t.sum()) == float(np.arange(1000).sum())  # torch's context still healthy
