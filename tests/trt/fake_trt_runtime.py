"""TEST DOUBLES for TensorRT's *runtime* API and ``pycuda.driver`` - NOT TensorRT, NOT CUDA.

They check our orchestration only: how many execution contexts, streams and
buffers the runtime makes, that each call uses one context exclusively, and that
everything is freed. The "engine" computes ``y = 2 * x + 1`` on ``x: float32[-1, 4]``
(profile 1/4/8) from host-side "device memory", sleeping briefly between reading
its input and writing its output, so two calls sharing a context would cross
their outputs. Real engines are tested in tests/trt/test_trt_engines.py.
"""
from __future__ import annotations

import itertools
import threading
import time
import types
import weakref
from typing import Any

import numpy as np

ENGINE_BYTES = b"FAKE-TRT-ENGINE:y=2x+1"


def make_fake_pycuda() -> tuple[types.ModuleType, types.ModuleType]:
    """(pycuda, pycuda.driver) doubles; ``driver.stats`` counts allocations and frees."""
    drv = types.ModuleType("pycuda.driver")
    memory: dict[int, np.ndarray] = {}
    stats = {"mem_alloc": 0, "mem_free": 0, "streams": 0}
    lock = threading.Lock()
    addresses = itertools.count(0x10000, 0x10000)
    drv.memory, drv.stats = memory, stats  # type: ignore[attr-defined]

    class _Alloc:
        def __init__(self, n: int) -> None:
            with lock:
                self.addr = next(addresses)
                memory[self.addr] = np.zeros(n, np.uint8)
                stats["mem_alloc"] += 1

        def __int__(self) -> int:
            return self.addr

        def free(self) -> None:
            with lock:
                del memory[self.addr]
                stats["mem_free"] += 1

    class Stream:
        def __init__(self) -> None:
            with lock:
                stats["streams"] += 1
            self.handle = id(self)

        def synchronize(self) -> None:
            pass

    class Event:
        def record(self, stream: Any) -> None:
            self.t = time.perf_counter()

        def synchronize(self) -> None:
            pass

        def time_till(self, other: "Event") -> float:
            return max((other.t - self.t) * 1e3, 1e-6)

    class _PrimaryContext:
        def push(self) -> None:
            pass

        def detach(self) -> None:
            pass

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        def name(self) -> str:
            return "Fake GPU (test double)"

        def compute_capability(self) -> tuple[int, int]:
            return (9, 0)

        def get_attribute(self, attr: Any) -> int:
            return 0  # not integrated, cannot map host memory

        def get_attributes(self) -> dict[Any, int]:
            return {}

        def retain_primary_context(self) -> _PrimaryContext:
            return _PrimaryContext()

    class Context:
        @staticmethod
        def pop() -> None:
            pass

    def memcpy_htod_async(dst: int, src: np.ndarray, stream: Any) -> None:
        raw = np.ascontiguousarray(src).reshape(-1).view(np.uint8)
        memory[int(dst)][:raw.size] = raw

    def memcpy_dtoh_async(dst: np.ndarray, src: int, stream: Any) -> None:
        out = dst.reshape(-1).view(np.uint8)
        out[...] = memory[int(src)][:out.size]

    drv.init = lambda: None  # type: ignore[attr-defined]
    drv.Device, drv.Context, drv.Stream, drv.Event = Device, Context, Stream, Event  # type: ignore[attr-defined]
    drv.mem_alloc = _Alloc  # type: ignore[attr-defined]
    drv.pagelocked_empty = lambda n, dtype, mem_flags=0: np.zeros(n, dtype)  # type: ignore[attr-defined]
    drv.memcpy_htod_async, drv.memcpy_dtoh_async = memcpy_htod_async, memcpy_dtoh_async  # type: ignore[attr-defined]
    drv.device_attribute = types.SimpleNamespace(INTEGRATED=1, CAN_MAP_HOST_MEMORY=2)  # type: ignore[attr-defined]
    drv.host_alloc_flags = types.SimpleNamespace(DEVICEMAP=1)  # type: ignore[attr-defined]
    pkg = types.ModuleType("pycuda")
    pkg.driver = drv  # type: ignore[attr-defined]
    pkg.__path__ = []  # type: ignore[attr-defined]
    return pkg, drv


def install_fake_runtime(trt: types.ModuleType, drv: types.ModuleType) -> dict[str, int]:
    """Give the fake ``tensorrt`` a Runtime whose engine is ``y = 2x + 1``; returns its counters."""
    stats = {"contexts_created": 0, "contexts_live": 0, "executing": 0, "peak_executing": 0, "executes": 0}
    lock = threading.Lock()
    FLOAT = object()
    trt.nptype = lambda dt: np.float32  # type: ignore[attr-defined]

    def _freed() -> None:
        with lock:
            stats["contexts_live"] -= 1

    class Context:
        def __init__(self) -> None:
            self.addr: dict[str, int] = {}
            self.shape: tuple[int, ...] | None = None
            with lock:
                stats["contexts_created"] += 1
                stats["contexts_live"] += 1
            weakref.finalize(self, _freed)

        def set_input_shape(self, name: str, shape: Any) -> bool:
            shape = tuple(int(d) for d in shape)
            if name != "x" or len(shape) != 2 or shape[1] != 4 or not 1 <= shape[0] <= 8:
                return False
            self.shape = shape
            return True

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addr[name] = int(ptr)
            return True

        def get_tensor_shape(self, name: str) -> list[int]:
            return [self.shape[0] if self.shape else -1, 4]

        def set_optimization_profile_async(self, index: int, stream: int) -> bool:
            return index == 0

        def execute_async_v3(self, stream: int) -> bool:
            with lock:
                stats["executing"] += 1
                stats["executes"] += 1
                stats["peak_executing"] = max(stats["peak_executing"], stats["executing"])
            try:
                assert self.shape is not None
                n = self.shape[0] * 4
                x = drv.memory[self.addr["x"]][:n * 4].view(np.float32).copy()  # type: ignore[attr-defined]
                time.sleep(0.0005)  # a shared context would let another call overwrite x/y here
                drv.memory[self.addr["y"]][:n * 4] = (2 * x + 1).astype(np.float32).view(np.uint8)  # type: ignore[attr-defined]
            finally:
                with lock:
                    stats["executing"] -= 1
            return True

    class Engine:
        num_io_tensors = 2
        num_optimization_profiles = 1
        device_memory_size = 1024

        def get_tensor_name(self, i: int) -> str:
            return ["x", "y"][i]

        def get_tensor_mode(self, name: str) -> Any:
            return trt.TensorIOMode.INPUT if name == "x" else trt.TensorIOMode.OUTPUT  # type: ignore[attr-defined]

        def get_tensor_dtype(self, name: str) -> Any:
            return FLOAT

        def get_tensor_shape(self, name: str) -> list[int]:
            return [-1, 4]

        def get_tensor_profile_shape(self, name: str, profile: int) -> list[list[int]]:
            return [[1, 4], [4, 4], [8, 4]]

        def create_execution_context(self) -> Context:
            return Context()

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            return Engine() if bytes(data) == ENGINE_BYTES else None

    trt.Runtime = Runtime  # type: ignore[attr-defined]
    return stats
