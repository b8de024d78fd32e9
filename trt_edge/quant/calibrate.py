"""``calibrate(model, data, options) -> CalibrationResult``: the calibration entry point."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import time
from typing import Iterable

import numpy as np
import onnx

from ..artifacts import sha256_bytes, tool_versions
from ..errors import CalibrationError, InvalidInputError
from ..log import stage
from .collect import collect_histograms, float_activations
from .methods import METHODS, compute_amax
from .batching import fixed_batch, for_model
from .qdq import (QuantizeOptions, bias_correction_inputs, find_existing_quantization, plan_qdq, planning_view,
                  refuse_activation_qdq, upgrade_opset)
from .ranges import CalibrationResult, TensorRange
from .select import AUTO_CANDIDATES, ScoringSession, expected_evaluations, scored_batches, select_methods

log = logging.getLogger(__name__)
SCOPES = ("qdq", "all")
CALIBRATION_METHODS = METHODS + ("auto",)


@dataclasses.dataclass
class CalibrationOptions:
    """How activations are calibrated.

    ``method``: "auto" (the default: each tensor group gets whichever of entropy,
    percentile, mse and max gives the best model-output SQNR on the first
    calibration batches, whole batches until at least ``select_samples`` (8) samples, see
    :mod:`trt_edge.quant.select`;
    ``select_min_gain_db`` is the gain a group override must bring), or one method
    for every tensor: "entropy" (TensorRT's EntropyCalibration2, for parity with
    TensorRT's own calibrator), "percentile", "max" or "mse".
    ``num_bins``: histogram bins (at least; see ``AbsHistogram``).
    ``percentile``: for the percentile method. ``num_quant_bins``: entropy levels
    (128 for int8). ``max_samples``: stop after this many samples (None: all the
    reader gives). ``batch_size``/``seed``: used when ``calibrate`` is given raw
    arrays rather than a reader. ``scope``: "qdq" calibrates the tensors Q/DQ
    insertion needs (with ``quantize``'s placement options), "all" every float
    activation (what a TensorRT implicit-INT8 cache wants).
    ``exclude_nodes``/``exclude_op_types``: passed to the placement, so excluded
    layers are not calibrated. ``target``: placement target ("tensorrt"/"onnxruntime").
    ``batch_size`` is ignored for a model with a fixed batch: its own batch is used (and a
    reader's batches are regrouped into it, see :mod:`trt_edge.quant.batching`).
    ``warn_below_db``: with ``auto``, warn when the output SQNR of the scored samples is below
    this, naming the tensors whose quantization noise is largest (suggesting ``--keep-worst``).
    ``select_budget``: with ``auto``, the scoring may cost at most about this fraction of the
    collection pass (counted in sample-evaluations: scored samples x expected evaluations, against
    the samples collected); on models with large samples (an image, a 128-token sequence) it scores
    fewer than ``select_samples`` samples, down to one batch. Deterministic (counts, not clock time).
    None: always score ``select_samples`` samples.
    ``bias_correction``: also record the per-channel means of the Conv/Gemm inputs, which
    :func:`quantize_qdq` uses to correct the biases for the weights' rounding (and ``auto``
    scores the corrected model).
    """

    method: str = "auto"
    num_bins: int = 2048
    percentile: float = 99.99
    num_quant_bins: int = 128
    max_samples: int | None = None
    batch_size: int = 32
    seed: int = 0
    scope: str = "qdq"
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    target: str = "tensorrt"
    select_samples: int = 8
    select_min_gain_db: float = 0.1
    select_budget: float | None = 0.5
    warn_below_db: float = 12.5
    bias_correction: bool = True
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise InvalidInputError(f"Unknown calibration method '{self.method}'; use one of "
                                    f"{', '.join(CALIBRATION_METHODS)}.")
        if self.select_samples < 1:
            raise InvalidInputError("select_samples must be >= 1.")
        if self.select_budget is not None and not self.select_budget > 0:
            raise InvalidInputError(f"select_budget must be > 0, got {self.select_budget}.")
        if self.scope not in SCOPES:
            raise InvalidInputError(f"scope must be one of {SCOPES}, got '{self.scope}'.")
        if self.num_bins < 256:
            raise InvalidInputError(f"num_bins must be >= 256, got {self.num_bins}.")
        if not 0 < self.percentile <= 100:
            raise InvalidInputError(f"percentile must be in (0, 100], got {self.percentile}.")
        if self.max_samples is not None and self.max_samples < 1:
            raise InvalidInputError("max_samples must be >= 1 or None.")
        if self.batch_size < 1:
            raise InvalidInputError("batch_size must be >= 1.")
        self.exclude_nodes = tuple(self.exclude_nodes)
        self.exclude_op_types = tuple(self.exclude_op_types)

    def placement(self) -> QuantizeOptions:
        return QuantizeOptions(exclude_nodes=self.exclude_nodes, exclude_op_types=self.exclude_op_types,
                               target=self.target, check_model_hash=False)


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def histogram_sqnr_db(hist, amax: float) -> float:  # noqa: ANN001 - AbsHistogram
    """Local SQNR (dB) of symmetric int8 quantization at ``amax`` of the values in ``hist``: signal
    power over rounding noise (step^2 / 12 inside the range) plus clipping noise (outside)."""
    if hist.bin_width == 0.0 or not hist.counts.size:
        return 200.0
    centres = (np.arange(hist.counts.size) + 0.5) * hist.bin_width
    counts = hist.counts.astype(np.float64)
    signal = float(np.sum(counts * centres ** 2))
    step = max(amax, 1e-12) / 127.0
    inside = centres <= amax
    noise = float(np.sum(counts[inside]) * step ** 2 / 12.0 + np.sum(counts[~inside] * (centres[~inside] - amax) ** 2))
    if signal <= 0.0:
        return 200.0
    return float(min(200.0, 10.0 * np.log10(signal / max(noise, 1e-300))))


def noisiest_tensors(histograms: dict, amax: dict[str, float], n: int = 5) -> list[tuple[str, float]]:
    """The ``n`` tensors with the lowest local quantization SQNR at their chosen ``amax``."""
    scored = sorted((histogram_sqnr_db(h, amax[t]), t) for t, h in histograms.items())
    return [(t, round(db, 2)) for db, t in scored[:n]]


def calibrate(model: onnx.ModelProto | str | os.PathLike[str],
              data: Iterable[dict[str, np.ndarray]] | dict[str, np.ndarray],
              options: CalibrationOptions | None = None) -> CalibrationResult:
    """Calibrate ``model`` (FP32) on ``data`` and return per-tensor ranges.

    ``data``: any iterable of ``{input_name: batch}`` (a reader from
    :mod:`trt_edge.quant.data`), or a dict of full arrays (batched here with
    ``options.batch_size``). Memory stays bounded by two batches' activations (one
    being binned on a worker thread while ONNX Runtime computes the next) plus
    ``2 * num_bins`` counters per tensor, whatever the number of samples.
    The result carries the model's canonical hash and the options.
    """
    opt = options or CalibrationOptions()
    if not isinstance(model, onnx.ModelProto):
        from ..artifacts import load_onnx
        model = load_onnx(model)
    # Everything that can refuse the model is checked before the long pass.
    existing = find_existing_quantization(model)
    try:
        refuse_activation_qdq(existing)
    except Exception as exc:  # QuantizationError: same message, calibration's type
        raise CalibrationError(str(exc)) from exc
    batch = fixed_batch(model)
    if isinstance(data, dict):
        from .data import NumpyReader
        data = NumpyReader(data, batch_size=batch or opt.batch_size, max_samples=opt.max_samples, seed=opt.seed)
    data = for_model(data, model)
    t0 = time.perf_counter()
    # The ranges are recorded for the model as given (quantize_qdq checks that hash, then converts
    # the same way); the converted model is what runs.
    original = model
    model, converted_from = upgrade_opset(model)
    view = planning_view(model)
    plan = plan_qdq(view, opt.placement())  # one plan serves the tensor list and bias correction's
    if opt.scope == "qdq":
        tensors = plan.activation_tensors()
    else:
        skip = existing.dequantized_weights
        tensors = [t for t in float_activations(model) if t not in skip]
    if not tensors:
        raise CalibrationError("The model has no float activations to calibrate.")
    channel_axes = {t: a for t, a in bias_correction_inputs(view, plan=plan).items() if t in set(tensors)} \
        if opt.bias_correction else {}
    # One serialization serves both the model hash (the same bytes
    # canonical_model_hash hashes) and the calibration session; the hash runs on
    # a thread (hashlib releases the GIL) while ONNX Runtime works.
    serialized = [model.SerializeToString(deterministic=True)]
    # auto's scoring session (the Q/DQ probe and its ONNX Runtime session: ~0.35 s on MiniLM)
    # needs the model and, where biases are corrected, the collection's channel means, never the
    # ranges. Without means to wait for (a transformer's MatMuls have no bias input) it is built
    # beside the collection pass, whose forward runs leave a core partly idle: MiniLM's `auto`
    # 4.06 -> 3.85 s, for the probe's weights held during the pass (peak 604 -> 725 MB). Otherwise it
    # is built on a thread while the candidate ranges are computed.
    probe_pool = concurrent.futures.ThreadPoolExecutor(1, "trt_edge-probe") if opt.method == "auto" else None
    scoring = probe_pool.submit(ScoringSession, model, opt.placement(), None, _cpu_count()) \
        if probe_pool is not None and not channel_axes else None
    try:
        with concurrent.futures.ThreadPoolExecutor(1, "trt_edge-hash") as pool:
            model_hash = pool.submit(sha256_bytes, serialized[0] if original is model
                                     else original.SerializeToString(deterministic=True))
            # the result's provenance reads ~20 packages' metadata (~20 ms, cached per process): here,
            # beside ONNX Runtime, not on the critical path after it
            pool.submit(tool_versions)
            with stage(f"collecting {len(tensors)} tensors ({opt.method})"):
                # pop(): collect_histograms gets the only reference and frees the bytes
                # once its session is built (a large model is not held twice while it runs)
                coll = collect_histograms(model, data, tensors, num_bins=opt.num_bins,
                                          histograms=opt.method != "max", max_samples=opt.max_samples,
                                          show_progress=opt.show_progress, serialized=serialized.pop(),
                                          keep_samples=opt.select_samples if opt.method == "auto" else 0,
                                          channel_axes=channel_axes)
            canonical_hash = model_hash.result()
        ranges: dict[str, TensorRange] = {}
        methods = AUTO_CANDIDATES if opt.method == "auto" else (opt.method,)
        names = list(coll.histograms)
        if probe_pool is not None and scoring is None:
            scoring = probe_pool.submit(ScoringSession, model, opt.placement(), coll.channel_means, _cpu_count())
        with stage("computing ranges"):
            def amax_of(job: tuple[str, str]) -> float:
                method, name = job
                return compute_amax(coll.histograms[name], method, percentile=opt.percentile,
                                    num_quant_bins=opt.num_quant_bins)

            # The per-tensor searches are independent NumPy work that releases the GIL:
            # spread them over the cores (the results do not depend on the order).
            jobs = [(m, n) for m in methods for n in names]
            with concurrent.futures.ThreadPoolExecutor(_cpu_count(), "trt_edge-ranges") as pool:
                found = dict(zip(jobs, pool.map(amax_of, jobs)))
            candidates = {m: {n: float(found[m, n]) for n in names} for m in methods}
        chosen = {n: opt.method for n in names}
        settings = dataclasses.asdict(opt)
        settings.pop("show_progress", None)
        if converted_from is not None:
            settings["converted_from_opset"] = converted_from
        if batch is not None:
            settings["model_fixed_batch"] = batch
        if existing:
            settings["existing_quantization"] = existing.describe()
        if coll.channel_means:
            settings["channel_means"] = {t: [float(v) for v in m] for t, m in coll.channel_means.items()}
        if opt.method == "auto":
            feeds, outputs = scored_batches(coll.kept_feeds, coll.kept_outputs, coll.num_samples,
                                            expected_evaluations(model, names), opt.select_samples,
                                            opt.select_budget)
            assert scoring is not None
            with stage(f"choosing methods ({', '.join(AUTO_CANDIDATES)})"):
                session = scoring.result()
                chosen, report = select_methods(model, candidates, feeds, outputs, min_gain_db=opt.select_min_gain_db,
                                                max_batch=batch, scoring=session)
            settings["auto_selection"] = report.to_dict()
            if report.final_db < opt.warn_below_db:
                worst = noisiest_tensors({n: coll.histograms[n] for n in names},
                                         {n: candidates[chosen[n]][n] for n in names})
                settings["quality_warning"] = {"final_db": report.final_db, "threshold_db": opt.warn_below_db,
                                               "noisiest_tensors": worst}
                log.warning("Low INT8 quality: output SQNR %.1f dB on the scored samples (below %.1f dB). The tensors "
                            "with the most quantization noise (local SQNR): %s. Keep the layers that hurt most in "
                            "float: `trt-edge quantize --keep-worst N --data SAMPLES.npz` measures each layer's "
                            "effect on the outputs.", report.final_db, opt.warn_below_db,
                            ", ".join(f"{t} ({db:.1f} dB)" for t, db in worst))
    finally:  # an error on the way must not leave the probe thread running
        if probe_pool is not None:
            probe_pool.shutdown(wait=False, cancel_futures=True)
    for name, hist in coll.histograms.items():
        ranges[name] = TensorRange(amax=candidates[chosen[name]][name], observed_amax=float(hist.amax),
                                   count=int(hist.total), method=chosen[name])
        if hist.nonfinite:
            log.warning("Tensor '%s' had %d NaN/inf values during calibration (ignored).",
                        name, hist.nonfinite)
    result = CalibrationResult(ranges=ranges, model_hash=canonical_hash, settings=settings,
                               num_samples=coll.num_samples, num_batches=coll.num_batches)
    log.info("calibrated %d tensors on %d samples in %.2fs", len(ranges), coll.num_samples,
             time.perf_counter() - t0)
    return result
