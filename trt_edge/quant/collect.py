"""Streaming activation collection: FP32 model in ONNX Runtime -> per-tensor |x| histograms.

The model is augmented so the tensors to calibrate are graph outputs; each
batch's activations are folded into fixed-size histograms and dropped before
the next batch runs, so memory does not grow with the number of samples
(ONNX Runtime's own calibrator keeps every batch's outputs until the end).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from typing import Iterable, Sequence

import numpy as np
import onnx
from onnx import helper, shape_inference

from .._lazy import require
from ..errors import CalibrationError
from ..log import progress
from ..onnx_io import graph_inputs
from .methods import AbsHistogram, HistogramScratch

log = logging.getLogger(__name__)

FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
               onnx.TensorProto.DOUBLE)


def _typing_view(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its weights replaced by typed graph inputs: type inference needs
    shapes and types only, and copying a large model's weights is what makes it slow."""
    view = onnx.ModelProto()
    view.ir_version = model.ir_version
    view.opset_import.extend(model.opset_import)
    view.functions.extend(model.functions)
    g = view.graph
    g.name = model.graph.name
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    g.value_info.extend(model.graph.value_info)
    have = {i.name for i in model.graph.input}
    for init in model.graph.initializer:
        if init.name not in have:
            g.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return view


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every named tensor we can type (inputs, outputs, inferred values)."""
    try:
        inferred = shape_inference.infer_shapes(_typing_view(model), strict_mode=False)
    except Exception:  # noqa: BLE001 - inference is best effort here
        inferred = model
    types: dict[str, int] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    return types


def float_activations(model: onnx.ModelProto) -> list[str]:
    """Every float tensor computed at run time: real graph inputs and node outputs."""
    types = tensor_types(model)
    inits = {i.name for i in model.graph.initializer}
    const_outputs = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    names = [i.name for i in graph_inputs(model)]
    names += [o for n in model.graph.node if n.op_type != "Constant" for o in n.output]
    return [n for n in dict.fromkeys(names)
            if n and n not in inits and n not in const_outputs and types.get(n) in FLOAT_TYPES]


def augment_outputs(model: onnx.ModelProto, names: Sequence[str],
                    types: dict[str, int] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs also include ``names``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.extend(_extra_outputs(model, names, types))
    return out


def _extra_outputs(model: onnx.ModelProto, names: Sequence[str],
                   types: dict[str, int] | None = None) -> list[onnx.ValueInfoProto]:
    have = {o.name for o in model.graph.output}
    types = tensor_types(model) if types is None else types
    return [helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None)
            for name in dict.fromkeys(names) if name not in have]


def augmented_bytes(model: onnx.ModelProto, names: Sequence[str], serialized: bytes | None = None) -> bytes:
    """The serialized model with ``names`` added as graph outputs, without copying the model.

    Protobuf guarantees that concatenating two serialized messages parses as
    their merge, and merging appends repeated fields: so ``serialized + (a
    ModelProto holding only the extra graph outputs)`` is the augmented model.
    This reuses the bytes already serialized for the model hash instead of
    deep-copying and re-serializing every weight.
    """
    if serialized is None:
        serialized = model.SerializeToString()
    extra = onnx.ModelProto()
    extra.graph.output.extend(_extra_outputs(model, names))
    return serialized + extra.SerializeToString()


@dataclasses.dataclass
class Collection:
    """What :func:`collect_histograms` saw."""

    histograms: dict[str, AbsHistogram]
    num_samples: int
    num_batches: int
    # the first batches' feeds and FP32 graph outputs, when asked for (``keep_samples``)
    kept_feeds: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)
    kept_outputs: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)
    # per-channel means of the tensors asked for (``channel_axes``): bias correction's input statistics
    channel_means: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def _session_options(ort, intra_op_threads: int):  # noqa: ANN001 - onnxruntime module
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = intra_op_threads
    # Basic optimizations keep every requested tensor meaningful (no fusion across
    # them) and the values bit-identical to the unoptimized graph; the higher
    # levels measured no faster here once outputs are exposed.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    # The histogram thread runs between and alongside ORT's kernels: ORT's idle
    # workers spinning for work would take its core.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


# Below this many values NumPy's max and min beat the native pass (ctypes' call overhead; measured:
# 49 K values 9.5 vs 12.3 us, 196 K 30.7 vs 31.1 us, 1.2 M 0.51 vs 0.41 ms)
_NATIVE_MAX_MIN_VALUES = 1 << 18


class _HistogramWorker:
    """Folds one batch's outputs into the histograms on a background thread.

    NumPy releases the GIL in the binning kernels, so batch ``k`` is binned while
    ONNX Runtime computes batch ``k + 1``. At most one batch is pending: memory is
    two batches' activations, never more.
    """

    def __init__(self, hists: dict[str, AbsHistogram], maxes: dict[str, float], histograms: bool,
                 threaded: bool, channel_axes: dict[str, int] | None = None) -> None:
        self.hists, self.maxes, self.histograms = hists, maxes, histograms
        self.channel_axes = channel_axes or {}
        self.sums: dict[str, np.ndarray] = {}
        self.rows: dict[str, int] = {}
        self.scratch = HistogramScratch()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "trt_edge-calib") if threaded else None
        self._pending: concurrent.futures.Future[None] | None = None

    def _fold(self, names: Sequence[str], outs: list[np.ndarray]) -> None:
        from . import native  # here, not at import: `python -m trt_edge.quant.native` builds it
        for name, arr in zip(names, outs):
            axis = self.channel_axes.get(name)
            ax = axis % arr.ndim if axis is not None and arr.ndim >= 2 and arr.size else None
            sums = None
            if ax is not None:
                sums = self.sums.get(name)
                if sums is None:  # the first batch (setdefault would allocate the zeros every batch)
                    sums = self.sums[name] = np.zeros(arr.shape[ax], np.float64)
            if sums is not None and ax is not None and sums.shape != (arr.shape[ax],):
                sums = None  # a batch of another channel count is not averaged
            # max |x| and the channel sums in one native read (None: no kernel, or NaN/inf present);
            # for max alone, small tensors are left to NumPy, whose max is as fast as the C call's cost
            batch_max = native.abs_max_channel_sums_f32(arr, ax, sums) \
                if sums is not None or arr.size >= _NATIVE_MAX_MIN_VALUES else None
            if sums is not None and ax is not None:
                if batch_max is None:
                    lead = int(np.prod(arr.shape[:ax], dtype=np.int64))
                    # rows of the contiguous inner axes first: much faster than reducing the outer axes
                    sums += arr.reshape(lead, arr.shape[ax], -1).sum(axis=2, dtype=np.float64).sum(axis=0)
                self.rows[name] = self.rows.get(name, 0) + arr.size // arr.shape[ax]
            if self.histograms:
                self.hists[name].update(arr, self.scratch, batch_max=batch_max)
            elif arr.size:
                if batch_max is None:
                    batch_max = max(float(np.nanmax(arr)), -float(np.nanmin(arr)))
                self.maxes[name] = max(self.maxes[name], batch_max)

    def submit(self, names: Sequence[str], outs: list[np.ndarray]) -> None:
        self.wait()
        if self._pool is None:
            self._fold(names, outs)
        else:
            self._pending = self._pool.submit(self._fold, names, outs)

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # re-raises a worker error here

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)


def collect_histograms(model: onnx.ModelProto, batches: Iterable[dict[str, np.ndarray]],
                       tensors: Sequence[str], *, num_bins: int = 2048, histograms: bool = True,
                       max_samples: int | None = None, show_progress: bool = True,
                       intra_op_threads: int = 0, serialized: bytes | None = None,
                       overlap: bool = True, keep_samples: int = 0,
                       channel_axes: dict[str, int] | None = None) -> Collection:
    """Run ``model`` on every batch and stream ``tensors`` into |x| histograms.

    ``histograms=False`` tracks only the exact max (enough for the "max" method).
    Feeds must be keyed by the model's input names; extra keys are dropped
    (tokenizers often produce inputs a model does not take).
    ``serialized``: ``model``'s bytes if the caller already has them (saves a
    serialization; pass the only reference, so the bytes are freed once the
    session is built). ``overlap``: bin batch ``k`` on a background thread while
    ONNX Runtime runs batch ``k + 1``; the histograms are the same either way
    (batches are folded in order). ``keep_samples``: also keep the feeds and the
    FP32 graph outputs of the first batches until this many samples (the reference
    a method selection is scored against; costs no extra forward pass).
    ``channel_axes``: tensor -> axis; the mean of each such tensor per index of that axis is
    accumulated too (``Collection.channel_means``; bias correction's statistics).
    """
    ort = require("onnxruntime", "INT8 calibration")
    if not tensors:
        raise CalibrationError("Nothing to calibrate: no float activations feed a quantizable op. "
                               "Check the model and the exclude options.")
    wanted = list(dict.fromkeys(tensors))
    session_bytes = augmented_bytes(model, wanted, serialized)
    del serialized  # the caller hands its reference over: a large model's bytes are not kept twice
    try:
        sess = ort.InferenceSession(session_bytes, _session_options(ort, intra_op_threads),
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types
        raise CalibrationError(f"ONNX Runtime cannot load the model for calibration: {exc}") from exc
    del session_bytes  # ONNX Runtime has its own copy now
    input_names = [i.name for i in sess.get_inputs()]
    graph_outputs = [o.name for o in model.graph.output if o.name not in set(wanted)]
    kept_feeds: list[dict[str, np.ndarray]] = []
    kept_outputs: list[dict[str, np.ndarray]] = []
    hists = {t: AbsHistogram(num_bins) for t in wanted}
    maxes = {t: 0.0 for t in wanted}
    seen = batches_seen = 0
    warned: set[str] = set()
    total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
    worker = _HistogramWorker(hists, maxes, histograms, threaded=overlap, channel_axes=channel_axes)
    try:
        for feed in progress(batches, total=total, description="calibrating", enabled=show_progress):
            if max_samples is not None and seen >= max_samples:
                break
            missing = [n for n in input_names if n not in feed]
            if missing:
                raise CalibrationError(f"Calibration batch lacks model inputs {missing} (got {sorted(feed)}). "
                                       "Key the reader's batches by the model's input names.")
            extra = set(feed) - set(input_names) - warned
            if extra:
                log.warning("Ignoring calibration inputs the model does not take: %s", sorted(extra))
                warned |= extra
            run_feed = {n: np.asarray(feed[n]) for n in input_names}
            first = next(iter(run_feed.values()), None)
            n = first.shape[0] if first is not None and first.ndim else 1
            if max_samples is not None and seen + n > max_samples:
                keep = max_samples - seen
                run_feed = {k: v[:keep] for k, v in run_feed.items()}
                n = keep
            if seen < keep_samples:
                outs = sess.run(wanted + graph_outputs, run_feed)
                # copies: a reader may refill its batch buffers in place for the next batch
                kept_feeds.append({k: np.array(v, copy=True) for k, v in run_feed.items()})
                kept_outputs.append({o.name: outs[wanted.index(o.name)] if o.name in wanted
                                     else outs[len(wanted) + graph_outputs.index(o.name)]
                                     for o in model.graph.output})
                outs = outs[:len(wanted)]
            else:
                outs = sess.run(wanted, run_feed)
            worker.submit(wanted, outs)
            seen += n
            batches_seen += 1
    finally:
        worker.close()
    if batches_seen == 0:
        raise CalibrationError("The calibration data yielded no batches. Give at least one sample.")
    if not histograms:
        for name, m in maxes.items():
            hists[name].amax = m
    means = {t: worker.sums[t] / worker.rows[t] for t in worker.sums if worker.rows.get(t)}
    return Collection(hists, seen, batches_seen, kept_feeds, kept_outputs, means)
