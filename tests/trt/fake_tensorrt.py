"""TEST DOUBLE for the ``tensorrt`` module - NOT TensorRT.

TensorRT cannot be installed on the CPU machines, so this small stand-in lets
the CPU tier check *our orchestration only*: which builder flags we set for
which precision and TensorRT version, how profiles, timing cache, DLA, plugins
and the calibrator are wired, how parser errors are reported, and that files
and sidecars are written. It records every call; its "engine" is a JSON dump
of those calls. It proves nothing about TensorRT itself: the ``tensorrt`` tier
(tests/trt/test_trt_engines.py) runs the real thing.

The API surface mirrors the documented TensorRT 10 Python API (names confirmed
in tensorrt-stubs 10.13); ``version="11.x"`` removes what TensorRT 11 removed
(weak-typing builder flags, ``int8_calibrator``).
"""
from __future__ import annotations

import json
import types
from typing import Any

import onnx


class _Enum:
    def __init__(self, prefix: str, names: list[str]) -> None:
        for i, n in enumerate(names):
            setattr(self, n, _Member(f"{prefix}.{n}", i))


class _Member:
    def __init__(self, name: str, value: int) -> None:
        self.name, self.value = name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Member) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


def make_fake_tensorrt(version: str = "10.3.0.26", unsupported_ops: tuple[str, ...] = (),
                       dla_cores: int = 0, fail_build: bool = False) -> types.ModuleType:
    """A fresh fake ``tensorrt`` module; ``mod.calls`` records what our code did."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    calls: list[tuple[Any, ...]] = []
    trt.calls = calls  # type: ignore[attr-defined]

    flags = ["SPARSE_WEIGHTS", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "GPU_FALLBACK", "TF32"]
    if major < 11:  # TensorRT 11 removed weak typing
        flags += ["FP16", "INT8", "BF16", "FP8"]
    trt.BuilderFlag = _Enum("BuilderFlag", flags)  # type: ignore[attr-defined]
    trt.MemoryPoolType = _Enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM"])  # type: ignore[attr-defined]
    trt.DeviceType = _Enum("DeviceType", ["GPU", "DLA"])  # type: ignore[attr-defined]
    trt.HardwareCompatibilityLevel = _Enum("HardwareCompatibilityLevel", ["NONE", "AMPERE_PLUS"])  # type: ignore[attr-defined]
    trt.NetworkDefinitionCreationFlag = _Enum(  # type: ignore[attr-defined]
        "NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH", "STRONGLY_TYPED"])
    trt.TensorIOMode = _Enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])  # type: ignore[attr-defined]

    class ILogger:
        def __init__(self) -> None:
            pass

    class IProgressMonitor:
        def __init__(self) -> None:
            pass

    class Dims(list):
        pass

    class _Registry:
        def load_library(self, path: str) -> object:
            calls.append(("load_library", path))
            return object()

    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        calls.append(("init_libnvinfer_plugins", namespace))
        return True

    class _Error:
        def __init__(self, idx: int, node: onnx.NodeProto) -> None:
            self._idx, self._node = idx, node

        def desc(self) -> str:
            return f"No importer registered for op: {self._node.op_type}"

        def code(self) -> str:
            return "ErrorCode.UNSUPPORTED_NODE"

        def node(self) -> int:
            return self._idx

        def node_name(self) -> str:
            return self._node.name

        def node_operator(self) -> str:
            return self._node.op_type

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.input_names: list[str] = []

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            self.network = network
            self.errors: list[_Error] = []

        def parse(self, model: bytes, path: str | None = None) -> bool:
            m = onnx.load_from_string(bytes(model))
            inits = {i.name for i in m.graph.initializer}
            self.network.input_names = [i.name for i in m.graph.input if i.name not in inits]
            calls.append(("parse", len(m.graph.node), sorted({n.op_type for n in m.graph.node})))
            self.errors = [_Error(i, n) for i, n in enumerate(m.graph.node) if n.op_type in unsupported_ops]
            return not self.errors

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> _Error:
            return self.errors[i]

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[list[int], list[int], list[int]]] = {}

        def set_shape(self, name: str, mn: Any, opt: Any, mx: Any) -> None:
            self.shapes[name] = (list(mn), list(opt), list(mx))

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = bytes(data)

        def serialize(self) -> bytes:
            return self.data + b"+timed"

    class Config:
        def __init__(self) -> None:
            self.flags: list[str] = []
            self.cleared: list[str] = []
            self.pools: dict[str, int] = {}
            self.profiles: list[Profile] = []
            self.calibration_profile: Profile | None = None
            self.timing_cache: TimingCache | None = None
            self.builder_optimization_level = 3
            self.default_device_type = trt.DeviceType.GPU  # type: ignore[attr-defined]
            self.DLA_core = -1
            self.plugins_to_serialize: list[str] = []
            self.progress_monitor: Any = None
            self.hardware_compatibility_level = trt.HardwareCompatibilityLevel.NONE  # type: ignore[attr-defined]
            if major < 11:
                self.int8_calibrator: Any = None

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            self.pools[repr(pool)] = size

        def set_flag(self, flag: Any) -> None:
            self.flags.append(repr(flag))

        def clear_flag(self, flag: Any) -> None:
            self.cleared.append(repr(flag))

        def add_optimization_profile(self, p: Profile) -> int:
            self.profiles.append(p)
            return len(self.profiles) - 1

        def set_calibration_profile(self, p: Profile) -> bool:
            self.calibration_profile = p
            return True

        def create_timing_cache(self, data: bytes) -> TimingCache:
            calls.append(("create_timing_cache", bytes(data)))
            return TimingCache(data)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.timing_cache = cache
            return True

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger
            self.num_DLA_cores = dla_cores

        def create_network(self, flags: int = 0) -> Network:
            calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            if config.progress_monitor is not None:
                config.progress_monitor.phase_start("Building engine", None, 2)
                config.progress_monitor.step_complete("Building engine", 1)
                config.progress_monitor.phase_finish("Building engine")
            self.logger.log(2, "fake warning: this is the TEST DOUBLE, not TensorRT")
            calib = getattr(config, "int8_calibrator", None)
            calib_batches = 0
            cache_bytes = 0
            if calib is not None:
                # What TensorRT does with an IInt8Calibrator: a valid cache is used as
                # is; otherwise it pulls batches until none is left, then writes a cache.
                cache = calib.read_calibration_cache()
                if cache:
                    cache_bytes = len(cache)
                else:
                    while calib.get_batch(network.input_names):
                        calib_batches += 1
                    calib.write_calibration_cache(b"TRT-fake-EntropyCalibration2\n")
            if fail_build:
                self.logger.log(1, "fake error: out of tactics")
                return None
            return json.dumps({
                "fake_engine": True, "network_flags": network.flags, "flags": config.flags,
                "cleared": config.cleared,
                "pools": config.pools, "opt_level": config.builder_optimization_level,
                "device": repr(config.default_device_type), "dla_core": config.DLA_core,
                "plugins_to_serialize": config.plugins_to_serialize,
                "hardware": repr(config.hardware_compatibility_level),
                "profiles": [p.shapes for p in config.profiles],
                "timing_cache_in": config.timing_cache.data.decode() if config.timing_cache else None,
                "calibrator": type(calib).__name__ if calib is not None else None,
                "calibration_batches": calib_batches, "calibration_cache_bytes": cache_bytes,
            }).encode()

    class IInt8EntropyCalibrator2:
        def __init__(self) -> None:
            pass

    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2  # type: ignore[attr-defined]
    trt.ILogger = ILogger  # type: ignore[attr-defined]
    trt.IProgressMonitor = IProgressMonitor  # type: ignore[attr-defined]
    trt.Dims = Dims  # type: ignore[attr-defined]
    trt.Builder = Builder  # type: ignore[attr-defined]
    trt.OnnxParser = OnnxParser  # type: ignore[attr-defined]
    trt.init_libnvinfer_plugins = init_libnvinfer_plugins  # type: ignore[attr-defined]
    registry = _Registry()
    trt.get_plugin_registry = lambda: registry  # type: ignore[attr-defined]

    class Runtime:  # deserialization must never be reached in the compatibility tests
        def __init__(self, logger: Any) -> None:
            calls.append(("Runtime",))

        def deserialize_cuda_engine(self, data: bytes) -> None:
            calls.append(("deserialize_cuda_engine",))
            return None

    trt.Runtime = Runtime  # type: ignore[attr-defined]
    return trt
