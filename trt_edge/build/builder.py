"""Build a TensorRT engine from ONNX (TensorRT 10 and 11 from one code path).

Thin on purpose: the decisions (precision plan, profiles, compatibility,
timing-cache validity) live in pure modules tested everywhere; this module
applies them to TensorRT's builder. ``import tensorrt`` happens inside the
functions, so importing this module needs no TensorRT; mypy checks the calls
against the patched ``tensorrt-stubs`` (``scripts/install_trt_stubs.py``).
"""
from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import onnx

from ..artifacts import atomic_write_bytes, atomic_write_text, load_onnx, model_hash, sha256_file
from ..errors import BuildError, CalibrationError, InvalidInputError
from ..onnx_io import TensorSpec, graph_inputs, graph_outputs, load_feeds
from .metadata import EngineMetadata, GpuInfo, query_gpu, write_engine_metadata
from .options import BuildOptions
from .precision import GraphPrecision, PrecisionPlan, plan_precision
from .profiles import ProfileSpec, resolve_profiles
from .timing_cache import load_timing_cache, save_timing_cache
from .versions import TrtVersion, load_tensorrt, parse_version

if TYPE_CHECKING:  # pragma: no cover - typing only
    import tensorrt

log = logging.getLogger(__name__)

_SEVERITIES = ("internal_error", "error", "warning", "info", "verbose")


@dataclasses.dataclass
class BuildResult:
    """What a build produced."""

    engine_path: Path
    metadata_path: Path
    log_path: Path
    metadata: EngineMetadata
    plan: PrecisionPlan
    build_time_s: float
    warnings: list[str] = dataclasses.field(default_factory=list)


# ---- model preparation (pure ONNX work: FP16 conversion, Q/DQ insertion) ------------------
def calibration_batches(path: Path, inputs: Sequence[TensorSpec], batch_size: int) -> list[dict[str, np.ndarray]]:
    """Split a calibration ``.npz`` (one array per input, samples on axis 0) into feed dicts.

    A network with a fixed batch gets batches of exactly that size (``batch_size`` is then
    ignored; see :mod:`trt_edge.quant.batching`), checked against its other fixed dimensions."""
    feeds = load_feeds(str(path))
    if set(feeds) == {""} and len(inputs) == 1:
        feeds = {inputs[0].name: feeds[""]}
    names = [s.name for s in inputs]
    missing = sorted(set(names) - set(feeds))
    if missing:
        raise CalibrationError(f"Calibration data '{path}' lacks arrays for inputs {missing}; it has "
                               f"{sorted(feeds)}. Save one array per input name (np.savez).")
    n = min(len(feeds[name]) for name in names)
    if n == 0:
        raise CalibrationError(f"Calibration data '{path}' is empty.")
    from ..quant.batching import fixed_batch, fixed_dims, rebatch
    from ..quant.data import NumpyReader  # batching and per-input casting live there

    fixed = fixed_batch(inputs)
    reader = NumpyReader({name: feeds[name][:n] for name in names}, batch_size=fixed or batch_size,
                         dtypes={s.name: s.dtype for s in inputs})
    if fixed is None:
        return list(reader)
    return list(rebatch(reader, fixed, dims=fixed_dims(inputs)))


def prepare_model(model: onnx.ModelProto, plan: PrecisionPlan, options: BuildOptions) -> tuple[onnx.ModelProto, str | None]:
    """Apply the precision plan's ONNX rewrites; returns the model and the calibration hash."""
    calib_hash: str | None = None
    if plan.convert_fp16:
        from ..quant import Fp16Options, convert_fp16

        model, report = convert_fp16(model, Fp16Options())
        log.info("converted the graph to FP16 for a strongly typed build: %s", report)
    if plan.quantize_qdq:
        from ..quant import CalibrationOptions, CalibrationResult, QuantizeOptions, calibrate, quantize_qdq

        if options.ranges is not None:
            ranges = CalibrationResult.load(options.ranges, expected_model_hash=None)
            calib_hash = sha256_file(options.ranges)
        elif options.calib_data is not None:
            batches = calibration_batches(options.calib_data, graph_inputs(model), options.calib_batch_size)
            ranges = calibrate(model, batches, CalibrationOptions(method=options.calib_method))
            calib_hash = sha256_file(options.calib_data)
        else:  # plan_precision never asks for Q/DQ without one of them
            raise InvalidInputError("INT8 Q/DQ insertion needs --ranges or --calib-data.")
        model = quantize_qdq(model, ranges, QuantizeOptions())
    return model, calib_hash


def optimize_if_available(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run the project's graph pipeline (verified in ONNX Runtime) when it is importable.

    A failing pass raises GraphPassError naming the pass; ``--no-optimize`` skips this step.
    """
    try:
        from ..graph.pipeline import optimize
    except ImportError as exc:  # onnx-graphsurgeon missing: building does not need it
        log.info("graph optimization skipped (%s)", exc)
        return model
    optimized, report = optimize(model)
    log.info("graph optimization: %d -> %d nodes", report.nodes_before, report.nodes_after)
    return optimized


# ---- TensorRT pieces ------------------------------------------------------------------------
def make_logger(trt: Any, level: str, lines: list[str]) -> "tensorrt.ILogger":
    """A TensorRT logger that keeps every message (the build log) and forwards to logging."""
    threshold = _SEVERITIES.index(level)

    class _CapturingLogger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self._lock = threading.Lock()

        def log(self, severity: Any, msg: str) -> None:
            idx = int(severity)
            name = _SEVERITIES[idx] if 0 <= idx < len(_SEVERITIES) else str(severity)
            with self._lock:
                lines.append(f"[{name.upper()}] {msg}")
            if idx <= threshold:
                py_level = logging.ERROR if idx <= 1 else logging.WARNING if idx == 2 else logging.DEBUG
                log.log(py_level, "TensorRT: %s", msg)

    return _CapturingLogger()  # type: ignore[no-any-return]


def make_progress_monitor(trt: Any) -> Any:
    """IProgressMonitor that logs build phases (TensorRT calls it from the build thread)."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Progress(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()  # pybind trampolines need the base initialiser
            self._steps: dict[str, int] = {}
            self._t0 = time.monotonic()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self._steps[phase_name] = num_steps
            indent = "  " if parent_phase else ""
            log.info("%sbuild phase '%s' (%d steps) at %.1fs", indent, phase_name, num_steps,
                     time.monotonic() - self._t0)

        def step_complete(self, phase_name: str, step: int) -> bool:
            total = self._steps.get(phase_name, 0)
            if total >= 10 and step % max(1, total // 10) == 0:
                log.info("  %s: %d/%d", phase_name, step, total)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            self._steps.pop(phase_name, None)

    return _Progress()


def load_plugins(trt: Any, logger: Any, plugins: Sequence[Path]) -> list[str]:
    """Load NVIDIA's plugins and ours; returns the loaded paths. Errors name the library."""
    import tensorrt as trt_typed

    if not trt_typed.init_libnvinfer_plugins(logger, ""):
        log.warning("init_libnvinfer_plugins returned False: NVIDIA's standard plugins are unavailable")
    loaded: list[str] = []
    registry = trt_typed.get_plugin_registry()
    for path in plugins:
        try:
            registry.load_library(str(path))
        except Exception as exc:  # noqa: BLE001 - pybind raises RuntimeError/TypeError
            # Fall back to static registration through dlopen (REGISTER_TENSORRT_PLUGIN).
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError as exc2:
                raise BuildError(f"Cannot load plugin library '{path}': {exc}; dlopen: {exc2}. "
                                 "Check it was built for this TensorRT and CUDA (csrc/README.md).") from exc2
        loaded.append(str(path))
        log.info("loaded plugin library %s", path)
    return loaded


def parser_errors(parser: Any) -> list[dict[str, Any]]:
    """The parser's errors as dicts (node index, name, op, description)."""
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        entry: dict[str, Any] = {"desc": err.desc(), "code": str(err.code()), "node": err.node()}
        for attr in ("node_name", "node_operator"):
            fn = getattr(err, attr, None)
            entry[attr] = fn() if callable(fn) else None
        out.append(entry)
    return out


def format_parser_errors(errors: Sequence[dict[str, Any]], model: onnx.ModelProto) -> str:
    """A message naming each failing node and op, with what to do about it."""
    lines = [f"TensorRT's ONNX parser rejected the model ({len(errors)} error(s)):"]
    unsupported: set[str] = set()
    for e in errors:
        name, op = e.get("node_name"), e.get("node_operator")
        idx = e.get("node", -1)
        if (not name or not op) and isinstance(idx, int) and 0 <= idx < len(model.graph.node):
            node = model.graph.node[idx]
            name, op = name or node.name, op or node.op_type
        lines.append(f"  node #{idx} '{name or '?'}' (op {op or '?'}): {e.get('desc', '')}")
        if "UNSUPPORTED" in str(e.get("code", "")).upper() or "no importer" in str(e.get("desc", "")).lower():
            unsupported.add(str(op))
    if unsupported:
        lines.append(
            f"Unsupported op(s) {sorted(unsupported)}: run `trt-edge optimize` (its passes replace "
            "ops TensorRT lacks), write a plugin of that op name and pass --plugins LIB.so, or "
            "re-export with a different opset.")
    else:
        lines.append("Check the model with `trt-edge inspect` and `onnx.checker`; "
                     "re-export with a supported opset if needed.")
    return "\n".join(lines)


def _dims(trt: Any, shape: Sequence[int]) -> Any:
    return trt.Dims(list(shape))


def configure_builder(trt: Any, builder: Any, config: Any, network: Any, options: BuildOptions,
                      plan: PrecisionPlan, profiles: Sequence[ProfileSpec], version: TrtVersion,
                      dynamic: bool) -> None:
    """Apply options and the precision plan to an IBuilderConfig (no build)."""
    import tensorrt as trt_typed

    cfg: trt_typed.IBuilderConfig = config
    if options.workspace is not None:
        cfg.set_memory_pool_limit(trt_typed.MemoryPoolType.WORKSPACE, options.workspace)
    if options.optimization_level is not None:
        cfg.builder_optimization_level = options.optimization_level
    for flag in plan.flags:
        cfg.set_flag(getattr(trt_typed.BuilderFlag, flag))
    if not options.allow_tf32:
        tf32 = getattr(trt_typed.BuilderFlag, "TF32", None)
        if tf32 is not None:
            cfg.clear_flag(tf32)
    if options.sparse_weights:
        cfg.set_flag(trt_typed.BuilderFlag.SPARSE_WEIGHTS)
    if options.version_compatible:
        cfg.set_flag(trt_typed.BuilderFlag.VERSION_COMPATIBLE)
        if options.exclude_lean_runtime:
            cfg.set_flag(trt_typed.BuilderFlag.EXCLUDE_LEAN_RUNTIME)
    if options.hardware_compatibility == "ampere_plus":
        cfg.hardware_compatibility_level = trt_typed.HardwareCompatibilityLevel.AMPERE_PLUS
    if options.dla_core is not None:
        if not version.supports_dla:
            raise BuildError(f"DLA is not available through TensorRT {version}: use a TensorRT 10.x "
                             "build (JetPack 6 on Orin) or drop --dla-core.")
        if builder.num_DLA_cores <= options.dla_core:
            raise BuildError(f"DLA core {options.dla_core} requested but this device has "
                             f"{builder.num_DLA_cores} DLA core(s) (only Jetson AGX/NX Orin and Xavier have DLA).")
        cfg.default_device_type = trt_typed.DeviceType.DLA
        cfg.DLA_core = options.dla_core
        if options.gpu_fallback:
            cfg.set_flag(trt_typed.BuilderFlag.GPU_FALLBACK)
    if options.serialize_plugins and options.plugins:
        cfg.plugins_to_serialize = [str(p) for p in options.plugins]
    if dynamic or len(profiles) > 1:
        for prof in profiles:
            p = builder.create_optimization_profile()
            for name, rng in prof.shapes.items():
                p.set_shape(name, _dims(trt, rng.min), _dims(trt, rng.opt), _dims(trt, rng.max))
            cfg.add_optimization_profile(p)


def _attach_calibrator(trt: Any, builder: Any, config: Any, options: BuildOptions,
                       model: onnx.ModelProto, source_hash: str | None) -> Any:
    """Attach the precision engineer's IInt8EntropyCalibrator2 adapter (TensorRT 10 implicit INT8)."""
    from .calibrator import EntropyCalibrator2Adapter

    inputs = graph_inputs(model)
    batches: list[dict[str, np.ndarray]] = []
    if options.calib_data is not None:
        batches = calibration_batches(options.calib_data, inputs, options.calib_batch_size)
    calibrator = EntropyCalibrator2Adapter(batches, options.calib_cache, [s.name for s in inputs],
                                           model_hash=source_hash)
    import tensorrt as trt_typed

    cfg: trt_typed.IBuilderConfig = config
    cfg.int8_calibrator = calibrator
    # Implicit INT8 with dynamic shapes calibrates at one fixed shape: the batches'.
    if any(spec.is_dynamic for spec in inputs) and batches:
        calib_profile = builder.create_optimization_profile()
        for name, arr in batches[0].items():
            dims = _dims(trt, arr.shape)
            calib_profile.set_shape(name, dims, dims, dims)
        cfg.set_calibration_profile(calib_profile)
    return calibrator


def build_engine(onnx_path: str | os.PathLike[str], output: str | os.PathLike[str],
                 options: BuildOptions | None = None) -> BuildResult:
    """Build ``output`` (a .plan) from ``onnx_path`` with TensorRT.

    Guarantees: the plan and its sidecar (``output.json``) and build log
    (``output.log``) are written atomically, only after a successful build; a
    parser failure names every rejected node and op; the timing cache is reused
    only for the same TensorRT version and GPU.
    Raises MissingDependencyError when TensorRT is not installed (use
    ``trt_edge.build.fallback.build_onnx_artifact`` then).
    """
    options = options or BuildOptions()
    trt = load_tensorrt("building a TensorRT engine")
    import tensorrt as trt_typed

    version = parse_version(trt.__version__)
    gpu = query_gpu()
    onnx_path = Path(onnx_path)
    output = Path(output)
    model = load_onnx(onnx_path)
    source_hash = model_hash(onnx_path)
    if options.sparse_weights:
        from ..compress.sparsity24 import sparse_flag_warning  # numpy + onnx only
        if (msg := sparse_flag_warning(model)) is not None:
            log.warning("%s", msg)
    # Optimization passes keep types, so the precision plan can be made on the source.
    plan = plan_precision(options.precision, version, GraphPrecision.of(model),
                          strongly_typed=options.strongly_typed,
                          have_ranges=options.ranges is not None,
                          have_calib_data=options.calib_data is not None,
                          have_calib_cache=options.calib_cache is not None,
                          mixed_fp16=options.mixed_fp16, prefer_calibrator=options.legacy_calibrator)
    for note in plan.notes:
        log.info("precision %s on TensorRT %s: %s", options.precision, version, note)
    # A TensorRT calibration cache names the source model's tensors: passes that
    # rename or fuse them would make it silently wrong, so they are skipped then.
    keep_names = plan.use_calibrator and options.calib_cache is not None
    if options.optimize_graph and not keep_names:
        model = optimize_if_available(model)
    model, calib_hash = prepare_model(model, plan, options)
    calib_source_hash = None
    if plan.use_calibrator:
        calib_hash = sha256_file(options.calib_data or options.calib_cache)  # type: ignore[arg-type]
        from ..quant.ranges import canonical_model_hash

        calib_source_hash = canonical_model_hash(model)
    inputs = graph_inputs(model)
    profiles = resolve_profiles(list(options.profiles), inputs, options.default_batch)
    dynamic = any(s.is_dynamic for s in inputs)

    log_lines: list[str] = []
    logger = make_logger(trt, options.log_level, log_lines)
    plugins = load_plugins(trt, logger, list(options.plugins))
    builder = trt_typed.Builder(logger)
    flags = 0
    if plan.strongly_typed and version.major < 11:  # implicit (always on) in TensorRT 11
        flags |= 1 << int(trt_typed.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt_typed.OnnxParser(network, logger)
    model_bytes = model.SerializeToString()
    # `path` lets the parser resolve external-data files next to the source model.
    if not parser.parse(model_bytes, str(onnx_path)):
        raise BuildError(format_parser_errors(parser_errors(parser), model))

    config = builder.create_builder_config()
    configure_builder(trt, builder, config, network, options, plan, profiles, version, dynamic)
    calibrator = (_attach_calibrator(trt, builder, config, options, model, calib_source_hash)
                  if plan.use_calibrator else None)

    cache_bytes = load_timing_cache(options.timing_cache, version, gpu)
    timing_cache = None
    if options.timing_cache is not None:
        timing_cache = config.create_timing_cache(cache_bytes)
        if not config.set_timing_cache(timing_cache, False):
            log.warning("TensorRT refused the timing cache %s; building without it", options.timing_cache)
            timing_cache = None
    monitor = make_progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor

    log.info("building %s engine from %s (TensorRT %s%s) ...", options.precision, onnx_path.name,
             version, f", {gpu.name}" if gpu else "")
    t0 = time.perf_counter()
    if calibrator is not None and options.calib_data is not None:
        # TensorRT pulls calibration batches into GPU memory the adapter allocates
        # with pycuda: make the (primary) context current and initialised for it.
        from .cuda import CudaContext

        ctx = CudaContext(0)
        try:
            with ctx:
                serialized = builder.build_serialized_network(network, config)
                calibrator.close()
        finally:
            ctx.close()
    else:
        serialized = builder.build_serialized_network(network, config)
    build_time = time.perf_counter() - t0
    log_path = output.with_name(output.name + ".log")
    atomic_write_text(log_path, "\n".join(log_lines) + "\n")
    if serialized is None:
        errors = [ln for ln in log_lines if ln.startswith(("[ERROR]", "[INTERNAL_ERROR]"))]
        raise BuildError("TensorRT failed to build the engine:\n  " + "\n  ".join(errors[-10:] or ["(no error logged)"])
                         + f"\nFull build log: {log_path}. Try a larger --workspace, a lower "
                           "--optimization-level, or fp32 to isolate the failing layer.")
    atomic_write_bytes(output, bytes(memoryview(serialized)))
    if timing_cache is not None and options.timing_cache is not None:
        save_timing_cache(options.timing_cache, bytes(memoryview(timing_cache.serialize())), version, gpu)

    io = [{"name": s.name, "mode": "input", "dtype": s.dtype.name, "shape": list(s.shape or [])}
          for s in inputs] + [{"name": s.name, "mode": "output", "dtype": s.dtype.name,
                               "shape": list(s.shape or [])} for s in graph_outputs(model)]
    meta = EngineMetadata(
        tensorrt_version=str(version), gpu=gpu, precision=options.precision,
        strongly_typed=plan.strongly_typed or version.major >= 11,
        profiles=[p.to_json() for p in profiles], source_onnx_sha256=source_hash,
        calibration_sha256=calib_hash, plugins=plugins,
        plugins_serialized=bool(options.serialize_plugins and plugins),
        version_compatible=options.version_compatible, exclude_lean_runtime=options.exclude_lean_runtime,
        hardware_compatibility=options.hardware_compatibility, dla_core=options.dla_core,
        build_time_s=round(build_time, 3), io=io)
    meta_path = write_engine_metadata(output, meta, onnx_path=onnx_path, options=options,
                                      build_log=log_path.name)
    warnings = [ln for ln in log_lines if ln.startswith("[WARNING]")]
    log.info("wrote %s (%.1f MB) in %.1fs", output, output.stat().st_size / 1e6, build_time)
    return BuildResult(output, meta_path, log_path, meta, plan, build_time, warnings)


__all__ = ["BuildResult", "build_engine", "configure_builder", "format_parser_errors",
           "calibration_batches", "prepare_model", "GpuInfo"]
