"""Check an imported ONNX model against LiteRT's own interpreter on the same inputs.

LiteRT (``ai-edge-litert``) runs the .tflite file with its default delegate
(XNNPACK on the CPU), which is also what runs MediaPipe's custom
``Convolution2DTransposeBias``; the ONNX model runs in ONNX Runtime with its graph
optimizations off, so the check is of the converted graph and not of ORT's rewrite.

Tolerances (per output, ``|onnx - litert| <= atol``):
- float outputs of a float model: ``atol = 1e-4 * max|litert output|`` (1e-4 of the
  output's scale: XNNPACK and ORT sum convolutions in different orders), never below
  1e-6 absolute (a sigmoid output that random inputs drive to ~1e-9 everywhere has no
  meaningful "scale"), and never below twice LiteRT's own disagreement with itself
  (XNNPACK vs its builtin kernels, measured on the same feed where both run): an
  ill-conditioned output such as pose_landmark_full's segmentation logits (values to
  ~1700) differs by ~0.5 between LiteRT's two CPU kernel sets, more than 1e-4 of its
  scale, so no converter could meet the 1e-4 rule there;
- outputs of a quantized model: one quantization step of the output (its scale, or
  1 for an integer output), since LiteRT's integer kernels round with fixed-point
  multipliers where the Q/DQ graph rounds in float.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping

import numpy as np
import onnx
import onnx.shape_inference
import onnx.utils

from .._lazy import require
from ..errors import InvalidInputError, RunnerError
from ..numerics import ComparisonReport, Tolerance, compare_arrays
from .converter import ConvertResult
from .emitter import symmetric_params
from .reader import TflModel

#: End to end, a quantized model's outputs must keep at least this SQNR against LiteRT's: a
#: wrong layout or operator gives ~0 dB, while the one-step rounding differences between
#: integer kernels and float Q/DQ compound through deep detectors to 19-46 dB (measured on
#: MediaPipe models quantized by LiteRT, whose own int8-vs-float SQNR there is 14-41 dB;
#: ours vs float is within 0.5 dB of LiteRT's on the detectors). The one-step rule itself is
#: checked per operator (:func:`operator_agreement`). With ``symmetric_activations`` the
#: scales differ from LiteRT's on purpose, so the end-to-end figures are reported only.
QUANT_E2E_MIN_SQNR_DB = 10.0
FLOAT_REL_TOLERANCE = 1e-4
FLOAT_ABS_FLOOR = 1e-6
NOISE_FLOOR_FACTOR = 2.0


def litert_interpreter(model: str | os.PathLike[str] | bytes, num_threads: int = 1, xnnpack: bool = True) -> Any:
    """A ready (allocated) LiteRT interpreter for a .tflite path or bytes."""
    lite = require("ai_edge_litert.interpreter", "running .tflite models with LiteRT")
    resolver = lite.OpResolverType.AUTO if xnnpack else lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    kwargs: dict[str, Any] = {"num_threads": int(num_threads), "experimental_op_resolver_type": resolver}
    if isinstance(model, (bytes, bytearray)):
        kwargs["model_content"] = bytes(model)
    else:
        kwargs["model_path"] = os.fspath(model)
    try:
        interp = lite.Interpreter(**kwargs)
        interp.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise RunnerError(f"LiteRT cannot run this model: {str(exc).strip().splitlines()[0]}. A custom op "
                          "needs its registration (MediaPipe's own ops are not part of LiteRT).") from exc
    return interp


def run_litert(interp: Any, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    details = interp.get_input_details()
    for d in details:
        if d["name"] not in feed:
            raise InvalidInputError(f"Missing input '{d['name']}' for the LiteRT model "
                                    f"(expects {[x['name'] for x in details]}).")
        interp.set_tensor(d["index"], np.ascontiguousarray(feed[d["name"]], dtype=d["dtype"]))
    interp.invoke()
    return {d["name"]: np.array(interp.get_tensor(d["index"])) for d in interp.get_output_details()}


def smooth_image(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """An image-like NHWC array in [0, 1]: a coarse random field, bilinearly enlarged, plus a little noise.

    Pure per-pixel noise drives some models to a constant output (MediaPipe's selfie
    segmentation answers ~1e-9 everywhere), which would hide conversion errors; large
    smooth regions look enough like a picture to give those models a real output.
    """
    n, h, w, c = shape
    coarse = rng.random((n, max(2, h // 16), max(2, w // 16), c))
    yi = np.linspace(0, coarse.shape[1] - 1, h)
    xi = np.linspace(0, coarse.shape[2] - 1, w)
    y0, x0 = np.floor(yi).astype(int), np.floor(xi).astype(int)
    y1, x1 = np.minimum(y0 + 1, coarse.shape[1] - 1), np.minimum(x0 + 1, coarse.shape[2] - 1)
    fy, fx = (yi - y0)[None, :, None, None], (xi - x0)[None, None, :, None]
    top = coarse[:, y0][:, :, x0] * (1 - fx) + coarse[:, y0][:, :, x1] * fx
    bottom = coarse[:, y1][:, :, x0] * (1 - fx) + coarse[:, y1][:, :, x1] * fx
    img = top * (1 - fy) + bottom * fy
    return np.clip(img + 0.05 * rng.standard_normal(img.shape), 0.0, 1.0)


def sample_inputs(interp: Any, seed: int = 0, smooth: bool = False) -> dict[str, np.ndarray]:
    """Random inputs in the range image models are fed: uniform [0, 1) floats (``smooth``: an
    image-like field for 4-D inputs with up to 4 channels), full-range ints."""
    rng = np.random.default_rng(seed)
    feed = {}
    for d in interp.get_input_details():
        shape, dtype = tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"])
        if dtype.kind == "f" and smooth and len(shape) == 4 and shape[-1] <= 4:
            feed[d["name"]] = smooth_image(shape, rng).astype(dtype)
        elif dtype.kind == "f":
            feed[d["name"]] = rng.random(shape, dtype=np.float64).astype(dtype)
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            lo, hi = max(info.min, -128), min(info.max, 255)
            feed[d["name"]] = rng.integers(lo, hi + 1, shape).astype(dtype)
        elif dtype == np.bool_:
            feed[d["name"]] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            raise InvalidInputError(f"Cannot generate data for input '{d['name']}' of dtype {dtype}; "
                                    "give real inputs (--inputs file.npz).")
    return feed


def output_tolerances(tfl: TflModel, reference: Mapping[str, np.ndarray],
                      litert_noise: Mapping[str, float] | None = None) -> dict[str, Tolerance]:
    """Per-output tolerance: 1e-4 of the output's scale (float) or one quantization step.

    ``litert_noise``: max |XNNPACK - builtin kernels| of LiteRT itself per output (float
    models), which raises a float output's tolerance to ``NOISE_FLOOR_FACTOR`` times it.
    """
    litert_noise = litert_noise or {}
    quant_model = any(t.quantized and t.type_name in ("INT8", "UINT8") for t in tfl.tensors)
    by_name = {tfl.tensors[i].name: tfl.tensors[i] for i in tfl.outputs}
    producer = {o: op for op in tfl.operators for o in op.outputs}
    tols = {}
    for name, ref in reference.items():
        t = by_name.get(name)
        step = None
        if t is not None and t.quant is not None and t.type_name in ("INT8", "UINT8"):
            step = 1.0  # integer output: one code
        elif t is not None and quant_model:
            op = producer.get(t.index)
            src = tfl.tensors[op.inputs[0]] if op is not None and op.opcode == "DEQUANTIZE" else None
            if src is not None and src.quant is not None:
                step = float(src.quant.scale[0])
        if step is not None:
            tols[name] = Tolerance(rtol=0.0, atol=step * 1.001)
        else:
            scale = float(np.max(np.abs(ref))) if ref.size else 0.0
            tols[name] = Tolerance(rtol=0.0, atol=max(FLOAT_REL_TOLERANCE * scale, FLOAT_ABS_FLOOR,
                                                      NOISE_FLOOR_FACTOR * litert_noise.get(name, 0.0)))
    return tols


def is_quantized(tfl: TflModel) -> bool:
    """True for a model with quantized (int8/uint8) activations."""
    return any(t.quantized and t.type_name in ("INT8", "UINT8") and not t.is_const for t in tfl.tensors)


@dataclasses.dataclass
class Verification:
    report: ComparisonReport
    tolerances: dict[str, Tolerance]
    shapes: dict[str, tuple[int, ...]]
    litert_noise: dict[str, float] = dataclasses.field(default_factory=dict)  # XNNPACK vs builtin kernels

    @property
    def passed(self) -> bool:
        return self.report.passed


def verify_against_litert(tflite_model: str | os.PathLike[str] | bytes, onnx_model: onnx.ModelProto,
                          tfl: TflModel, nchw_io: bool, feeds: list[dict[str, np.ndarray]] | None = None,
                          symmetric: bool = False) -> list[Verification]:
    """Run both models on ``feeds`` (default: two random feeds) and compare every output."""
    ort = require("onnxruntime", "verifying the imported model")
    interp = litert_interpreter(tflite_model)
    try:
        builtin = litert_interpreter(tflite_model, xnnpack=False)
    except RunnerError:  # e.g. a custom op only XNNPACK implements: no second opinion
        builtin = None
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = feeds or [sample_inputs(interp, 0), sample_inputs(interp, 1, smooth=True)]
    quantized = is_quantized(tfl)
    results = []
    for feed in feeds:
        ref = run_litert(interp, feed)
        onnx_feed = {k: (v.transpose(0, 3, 1, 2) if nchw_io and v.ndim == 4 else v) for k, v in feed.items()}
        names = [o.name for o in sess.get_outputs()]
        got = dict(zip(names, sess.run(names, onnx_feed)))
        if nchw_io:
            got = {k: (v.transpose(0, 2, 3, 1) if v.ndim == 4 else v) for k, v in got.items()}
        noise: dict[str, float] = {}
        if builtin is not None:
            other = run_litert(builtin, feed)
            noise = {k: float(np.max(np.abs(other[k].astype(np.float64) - v.astype(np.float64))))
                     for k, v in ref.items() if v.dtype.kind == "f" and v.size}
        tols = output_tolerances(tfl, ref, noise)
        outs = []
        for name, r in ref.items():
            if name not in got:
                raise RunnerError(f"The ONNX model has no output '{name}' (has {sorted(got)}).")
            a, b = got[name], r
            if b.dtype.kind in "iu":  # quantized integer outputs: compare codes as numbers
                a, b = a.astype(np.float64), b.astype(np.float64)
            if quantized:
                cmp = compare_arrays(name, a, b, None)
                cmp.passed = None if symmetric else bool(cmp.sqnr_db >= QUANT_E2E_MIN_SQNR_DB)
                outs.append(cmp)
            else:
                outs.append(compare_arrays(name, a, b, tols[name]))
        results.append(Verification(ComparisonReport(outs), tols,
                                    {k: tuple(v.shape) for k, v in feed.items()}, noise))
    return results


@dataclasses.dataclass(frozen=True)
class OperatorCheck:
    """One TFLite operator run in isolation: the ONNX subgraph that converts it, fed LiteRT's
    own values of the operator's inputs, against LiteRT's value of its output."""

    index: int
    kind: str
    output: str
    max_abs_error: float
    step: float | None           # quantization step of the output (None: float tensor)
    elements_over_one_step: int

    @property
    def steps(self) -> float:
        return self.max_abs_error / self.step if self.step else math.inf if self.max_abs_error else 0.0

    @property
    def passed(self) -> bool:
        return self.step is None or self.elements_over_one_step == 0


def _real_value(t: Any, raw: np.ndarray) -> np.ndarray:
    if t.quant is not None and raw.dtype.kind in "iu" and t.type_name in ("INT8", "UINT8"):
        return (raw.astype(np.float64) - float(t.quant.zero_point[0])) * float(t.quant.scale[0])
    return raw.astype(np.float64)


def operator_agreement(tflite_model: str | os.PathLike[str] | bytes, tfl: TflModel, converted: ConvertResult,
                       feed: Mapping[str, np.ndarray], symmetric: bool = False) -> list[OperatorCheck]:
    """Check every operator of a quantized model on its own against LiteRT's integer kernels.

    End to end, one-step rounding differences between integer kernels (fixed-point
    multipliers) and Q/DQ in float compound through a deep network; run operator by
    operator, each converted operator must land within one quantization step of LiteRT's
    builtin (reference) integer kernels. Uses LiteRT with all intermediate tensors kept.
    """
    ort = require("onnxruntime", "verifying the imported model")
    lite = require("ai_edge_litert.interpreter", "running .tflite models with LiteRT")
    kwargs: dict[str, Any] = {"experimental_preserve_all_tensors": True,
                              "experimental_op_resolver_type": lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    if isinstance(tflite_model, (bytes, bytearray)):
        kwargs["model_content"] = bytes(tflite_model)
    else:
        kwargs["model_path"] = os.fspath(tflite_model)
    interp = lite.Interpreter(**kwargs)
    interp.allocate_tensors()
    run_litert(interp, feed)
    extractor = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(converted.model))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    checks = []
    for op in tfl.operators:
        ins = [i for i in op.inputs if i >= 0 and i in converted.values and not tfl.tensors[i].is_const]
        outs = [o for o in op.outputs if o in converted.values]
        if not ins or not outs:
            continue  # constant folding (weights, densify): checked through its consumers
        sub = extractor.extract_model([converted.values[i][0] for i in ins], [converted.values[o][0] for o in outs])
        sess = ort.InferenceSession(sub.SerializeToString(), so, providers=["CPUExecutionProvider"])
        wanted = {x.name for x in sess.get_inputs()}
        sub_feed = {}
        for i in ins:
            name, layout = converted.values[i]
            v = _real_value(tfl.tensors[i], interp.get_tensor(i))
            if layout == "nchw" and v.ndim == 4:
                v = v.transpose(0, 3, 1, 2)
            if name in wanted:
                sub_feed[name] = v.astype(np.float32)
        for o, got in zip(outs, sess.run(None, sub_feed)):
            t = tfl.tensors[o]
            if converted.values[o][1] == "nchw" and got.ndim == 4:
                got = got.transpose(0, 2, 3, 1)
            ref = _real_value(t, interp.get_tensor(o))
            step = None
            if t.quant is not None and t.type_name in ("INT8", "UINT8"):
                step = float(t.quant.scale[0])
                zp = int(t.quant.zero_point[0])
                if symmetric and (zp != 0 or t.type_name == "UINT8"):
                    step = symmetric_params(step, zp, np.int8 if t.type_name == "INT8" else np.uint8)[0]
            err = np.abs(got.astype(np.float64) - ref)
            over = int(np.count_nonzero(err > step * 1.001)) if step else 0
            checks.append(OperatorCheck(op.index, op.kind, t.name, float(err.max()) if err.size else 0.0, step, over))
    return checks
