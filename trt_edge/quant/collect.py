"""Streaming activation collection: FP32 model in ONNX Runtime -> per-tensor |x| histograms.

The model is augmented so the tensors to calibrate are graph outputs; each
batch's activations are folded into fixed-size histograms and dropped before
the next batch runs, so memory does not grow with the number of samples
(ONNX Runtime's own calibrator keeps every batch's outputs until the end).
"""
from __future__ import annotations

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
from .methods import AbsHistogram

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


def augment_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs also include ``names``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    types = tensor_types(model)
    for name in names:
        if name not in have:
            out.graph.output.append(helper.make_tensor_value_info(
                name, types.get(name, onnx.TensorProto.FLOAT), None))
    return out


@dataclasses.dataclass
class Collection:
    """What :func:`collect_histograms` saw."""

    histograms: dict[str, AbsHistogram]
    num_samples: int
    num_batches: int


def collect_histograms(model: onnx.ModelProto, batches: Iterable[dict[str, np.ndarray]],
                       tensors: Sequence[str], *, num_bins: int = 2048, histograms: bool = True,
                       max_samples: int | None = None, show_progress: bool = True,
                       intra_op_threads: int = 0) -> Collection:
    """Run ``model`` on every batch and stream ``tensors`` into |x| histograms.

    ``histograms=False`` tracks only the exact max (enough for the "max" method).
    Feeds must be keyed by the model's input names; extra keys are dropped
    (tokenizers often produce inputs a model does not take).
    """
    ort = require("onnxruntime", "INT8 calibration")
    if not tensors:
        raise CalibrationError("Nothing to calibrate: no float activations feed a quantizable op. "
                               "Check the model and the exclude options.")
    augmented = augment_outputs(model, tensors)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = intra_op_threads
    # Basic optimizations keep every requested tensor meaningful (no fusion across them).
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    try:
        sess = ort.InferenceSession(augmented.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types
        raise CalibrationError(f"ONNX Runtime cannot load the model for calibration: {exc}") from exc
    input_names = [i.name for i in sess.get_inputs()]
    wanted = list(tensors)
    hists = {t: AbsHistogram(num_bins) for t in wanted}
    maxes = {t: 0.0 for t in wanted}
    seen = batches_seen = 0
    warned: set[str] = set()
    total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
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
        n = next(iter(run_feed.values())).shape[0] if run_feed and next(iter(run_feed.values())).ndim else 1
        if max_samples is not None and seen + n > max_samples:
            keep = max_samples - seen
            run_feed = {k: v[:keep] for k, v in run_feed.items()}
            n = keep
        outs = sess.run(wanted, run_feed)
        for name, arr in zip(wanted, outs):
            if histograms:
                hists[name].update(arr)
            elif arr.size:
                maxes[name] = max(maxes[name], float(np.nanmax(np.abs(arr))))
        del outs
        seen += n
        batches_seen += 1
    if batches_seen == 0:
        raise CalibrationError("The calibration data yielded no batches. Give at least one sample.")
    if not histograms:
        for name, m in maxes.items():
            hists[name].amax = m
    return Collection(hists, seen, batches_seen)
