"""``method="auto"``: choose each tensor's calibration method by its effect on the model outputs.

No single threshold rule suits every tensor. Measured on our three reference models
(docs/benchmarks/quant.md): TensorRT's entropy rule clips MNIST's input at the
normalised-background spike (accuracy 95% -> 36%); clipping the rare, very large
values after MiniLM's LayerNorms (its outlier features) costs 0.03-0.06 Pearson
whatever the rule (entropy, percentile, MSE), while ``max`` on MobileNetV2 wastes
the int8 grid on a long tail. The local statistics of one histogram cannot tell
these apart; the model's outputs can.

So the selection is scored end to end, cheaply:
1. every candidate method's amax is computed from the *same* histograms (the
   forward passes are not repeated);
2. one Q/DQ model is built whose activation scales are graph inputs
   (:func:`~trt_edge.quant.qdq.build_scale_probe`), so one ONNX Runtime session
   scores any assignment on the first calibration batches, against the FP32
   outputs kept from the calibration pass itself;
3. the whole-model best method is the base; then, group by group (tensors grouped
   by the op that produces them: LayerNormalization, Conv, graph input, ...), a
   different method is adopted where it improves the output SQNR by more than
   ``min_gain_db``. Groups, not tensors: a few dozen evaluations instead of
   hundreds, and a group's tensors share a distribution shape, so the choice
   generalises beyond the scored batches.

The choice and every score are recorded with the ranges (``settings["auto_selection"]``,
and each tensor's ``method``).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import time
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from .._lazy import require
from ..errors import CalibrationError
from .qdq import QuantizeOptions, build_scale_probe

log = logging.getLogger(__name__)

AUTO_CANDIDATES = ("entropy", "percentile", "mse", "max")
GRAPH_INPUT_GROUP = "graph input"
_SQNR_CAP_DB = 200.0  # identical outputs: finite, so the mean over outputs stays meaningful
# initializers from this size on reach the probe session as arrays (smaller ones, e.g. Reshape's
# shapes, stay in the model, where ONNX Runtime's shape inference reads them)
_EXTERNAL_MIN_BYTES = 4096
_SAME_AMAX_REL = 0.01  # thresholds within 1% move the int8 grid by under 1%: not worth a forward pass


@dataclasses.dataclass
class SelectionReport:
    """What ``method="auto"`` chose and why (all scores in dB of output SQNR vs FP32)."""

    base_method: str
    group_methods: dict[str, str]           # producer op type -> method, where it differs from the base
    whole_model_db: dict[str, float]        # every candidate applied to every tensor
    group_trials_db: dict[str, dict[str, float]]  # group -> method tried -> score (on top of earlier choices)
    final_db: float
    eval_samples: int
    evaluations: int
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        groups = ", ".join(f"{g} -> {m}" for g, m in self.group_methods.items()) or "none"
        scores = ", ".join(f"{m} {db:.1f}" for m, db in self.whole_model_db.items())
        return (f"auto: base {self.base_method} (whole-model SQNR dB: {scores}); group overrides: {groups}; "
                f"final {self.final_db:.1f} dB on {self.eval_samples} samples, {self.evaluations} evaluations "
                f"in {self.seconds:.2f}s")


def tensor_groups(model: onnx.ModelProto, tensors: Sequence[str]) -> dict[str, list[str]]:
    """Tensors grouped by the op type that produces them (graph inputs form their own group)."""
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    groups: dict[str, list[str]] = {}
    for t in tensors:
        groups.setdefault(producer.get(t, GRAPH_INPUT_GROUP), []).append(t)
    return groups


def expected_evaluations(model: onnx.ModelProto, tensors: Sequence[str], max_alternatives: int = 2,
                         methods: int = len(AUTO_CANDIDATES)) -> int:
    """The most scoring runs :func:`select_methods` makes: every method on the whole model, then
    up to ``max_alternatives`` others on each tensor group."""
    return methods + max_alternatives * len(tensor_groups(model, tensors))


def _samples(feed: Mapping[str, np.ndarray]) -> int:
    """Samples in a feed: its first input's leading dimension (1 for a scalar input)."""
    first = np.asarray(next(iter(feed.values()))) if feed else np.zeros(())
    return int(first.shape[0]) if first.ndim else 1


Feeds = list[Mapping[str, np.ndarray]]


def scored_batches(feeds: Sequence[Mapping[str, np.ndarray]], reference: Sequence[Mapping[str, np.ndarray]],
                   collected: int, evaluations: int, max_samples: int, budget: float | None,
                   min_values: int = 1000) -> tuple[Feeds, Feeds]:
    """The first whole batches of the kept ones to score on: at least ``k`` samples, where ``k``
    keeps ``k * evaluations`` within ``budget * collected``, but at least enough samples for
    ``min_values`` float output values, at least one batch and at most ``max_samples`` samples
    (``budget`` None: ``max_samples``). Why: scoring runs the model ``evaluations`` times on the
    scored samples, so 8 samples x ~20 evaluations of a batch-1 transformer cost more forward
    passes than collecting 64 samples did; on such models one or two samples already carry
    thousands of output values to compare (MobileNetV2: 1,000 logits each, MiniLM: 128 x 384)."""
    k = max_samples
    if budget is not None and feeds:
        k_budget = math.ceil(budget * collected / max(evaluations, 1))
        # ... but never so few that the score rests on a handful of numbers (MNIST: 10 logits a sample)
        per_sample = sum(np.asarray(v).size for v in reference[0].values()
                         if np.asarray(v).dtype.kind == "f") / max(_samples(feeds[0]), 1)
        k_values = math.ceil(min_values / max(per_sample, 1.0))
        k = max(1, min(max_samples, max(k_budget, k_values)))
    out_f: Feeds = []
    out_r: Feeds = []
    seen = 0
    for f, r in zip(feeds, reference):
        if seen >= k:
            break
        out_f.append(f)
        out_r.append(r)
        seen += _samples(f)
    if len(out_f) < len(feeds):
        log.debug("auto: scoring on %d of the %d kept samples (budget %.2f of %d collected, %d evaluations)",
                  seen, sum(_samples(f) for f in feeds), budget, collected, evaluations)
    return out_f, out_r


def output_sqnr_db(outputs: Sequence[Mapping[str, np.ndarray]], reference: Sequence[Mapping[str, np.ndarray]]) -> float:
    """Mean over the float graph outputs of SQNR (dB) against ``reference``, batches pooled."""
    names = [n for n, v in reference[0].items() if np.asarray(v).dtype.kind == "f"]
    if not names:
        raise CalibrationError("method='auto' needs at least one float model output to score against.")
    dbs = []
    for name in names:
        ref = np.concatenate([np.asarray(r[name], np.float64).ravel() for r in reference])
        got = np.concatenate([np.asarray(o[name], np.float64).ravel() for o in outputs])
        if got.shape != ref.shape:
            raise CalibrationError(f"Output '{name}' has {got.size} values in the quantized model but "
                                   f"{ref.size} in the FP32 reference: cannot score the calibration methods.")
        finite = np.isfinite(ref)
        noise = float(np.sum((got[finite] - ref[finite]) ** 2))
        signal = float(np.sum(ref[finite] ** 2))
        if not np.isfinite(got[finite]).all():
            dbs.append(-_SQNR_CAP_DB)
        elif noise == 0.0:
            dbs.append(_SQNR_CAP_DB)
        elif signal == 0.0:
            dbs.append(-_SQNR_CAP_DB)
        else:
            dbs.append(min(10.0 * math.log10(signal / noise), _SQNR_CAP_DB))
    return float(np.mean(dbs))


def _merge_batches(feeds: Sequence[Mapping[str, np.ndarray]],
                   reference: Sequence[Mapping[str, np.ndarray]]) -> tuple[list[dict[str, np.ndarray]],
                                                                        list[dict[str, np.ndarray]]]:
    """One big batch instead of several small ones (fewer, more efficient runs), when every
    input and output stacks on axis 0; otherwise the batches as given."""
    if len(feeds) < 2:
        return [dict(f) for f in feeds], [dict(r) for r in reference]

    def stackable(items: Sequence[Mapping[str, np.ndarray]]) -> bool:
        first = items[0]
        return all(set(i) == set(first) and all(np.ndim(i[k]) >= 1 and np.shape(i[k])[1:] == np.shape(first[k])[1:]
                                                 and np.shape(i[k])[0] == np.shape(next(iter(i.values())))[0]
                                                 for k in first) for i in items)

    # outputs must carry the batch on axis 0 too (a per-batch statistic output would not stack)
    if not (stackable(feeds) and stackable(reference)) or \
            any(np.shape(v)[0] != _samples(f) for f, r in zip(feeds, reference) for v in r.values()):
        return [dict(f) for f in feeds], [dict(r) for r in reference]
    def merge(items: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {k: np.concatenate([np.asarray(i[k]) for i in items]) for k in items[0]}

    return [merge(feeds)], [merge(reference)]


def probe_session_options(model: onnx.ModelProto, placement: QuantizeOptions | None = None) -> tuple[Any, list[str]]:
    """``(SessionOptions, disabled optimizer names)`` of the scoring session for ``model``'s probe."""
    ort = require("onnxruntime", "calibration method selection")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    disabled: list[str] = []
    if (placement or QuantizeOptions()).target == "tensorrt":
        # The TensorRT placement's probe computes exactly what TensorRT will (DQ -> float op, the
        # per-channel weights): ONNX Runtime's WeightBiasQuantization transformer would re-quantize
        # its float weights per tensor (MobileNetV2's probe: 13.5 dB from the deployed model, the
        # size of the quantization noise itself; 134 dB without it). With the weights left float,
        # level 3 lays the Convs out in NCHWc blocks: MobileNetV2's probe runs 27 -> 15 ms, MNIST's
        # 4.5 -> 3.5 ms (60 and 311 dB from the deployed model). A transformer gains nothing there
        # and its level-2 fusions move the probe 8 dB further from the deployed model (MiniLM: 33 ->
        # 25 dB, 42 -> 45 ms a run), so level 3 is for models that are mostly convolutions (a ViT's
        # one patch-embedding Conv does not make it one).
        disabled = ["WeightBiasQuantization"]
        ops = [n.op_type for n in model.graph.node]
        if sum(o in ("Conv", "ConvTranspose") for o in ops) >= max(1, sum(o in ("MatMul", "Gemm") for o in ops)):
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The ONNX Runtime placement keeps that transformer, measured (docs/benchmarks/quant.md, "the
    # probe is not the deployed model"): its Conv/Gemm weights are re-quantized per tensor and the
    # bias to int32 at the run-time activation scale, a noisier model than the one deployed, and
    # scoring without it chose worse on held-out data (MobileNetV2's agreement 0.856 -> 0.789 on
    # 104 crops, 0.839 -> 0.793 on 416; MNIST 0.951 -> 0.949/0.950; MiniLM the same). The probe of
    # that placement is not exact either way: ONNX Runtime's int8 kernels are not simulated.
    return so, disabled


class ScoringSession:
    """The Q/DQ probe of a model (:func:`~trt_edge.quant.qdq.build_scale_probe`) in an ONNX
    Runtime session, ready to score activation ranges. Building it (the probe and the session:
    ~0.35 s on MiniLM) needs only the model and the bias-correction means, not the
    ranges, so :func:`~trt_edge.quant.calibrate.calibrate` builds it on a thread: beside the
    collection pass when there are no means to wait for, else while it computes the candidate
    ranges. ``threads`` evaluations run at once, each on one ONNX Runtime thread:
    on the batch-1 models calibration meets, two single-threaded runs side by side do ~1.2x the
    work of one run on two threads (measured on MiniLM and MobileNetV2)."""

    def __init__(self, model: onnx.ModelProto, placement: QuantizeOptions | None = None,
                 channel_means: Mapping[str, np.ndarray] | None = None, threads: int = 1) -> None:
        ort = require("onnxruntime", "calibration method selection")
        # the weights reach ONNX Runtime as arrays, not inside the model's bytes: serializing and
        # parsing them was ~0.3 s of MiniLM's ~0.65 s probe build (ORT copies them at load, so
        # the arrays are dropped once the session exists)
        self.probe = build_scale_probe(model, placement, channel_means, external_min_bytes=_EXTERNAL_MIN_BYTES)
        so, disabled = probe_session_options(model, placement)
        so.intra_op_num_threads = 1 if threads > 1 else 0
        external = self.probe.external
        if external:
            so.add_external_initializers(list(external), [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v))
                                                          for v in external.values()])
        try:
            self.session = ort.InferenceSession(self.probe.model.SerializeToString(), so,
                                                providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types
            raise CalibrationError(f"ONNX Runtime cannot run the Q/DQ probe model for method selection: {exc}") from exc
        finally:
            external.clear()
        scale_names = set(self.probe.scale_inputs.values())
        self.input_names = [i.name for i in self.session.get_inputs() if i.name not in scale_names]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.threads = max(1, threads)

    def run_all(self, jobs: Sequence[tuple[Mapping[str, float], Mapping[str, np.ndarray]]]
                ) -> list[dict[str, np.ndarray]]:
        """The probe's outputs for each ``(amax per tensor, feed)``, in order (run concurrently)."""
        def one(job: tuple[Mapping[str, float], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
            amax, feed = job
            run = {n: feed[n] for n in self.input_names}
            run.update(self.probe.feeds(amax))
            return dict(zip(self.output_names, self.session.run(self.output_names, run)))

        if self.threads == 1 or len(jobs) <= 1:
            return [one(j) for j in jobs]
        with concurrent.futures.ThreadPoolExecutor(min(self.threads, len(jobs)), "trt_edge-score") as pool:
            return list(pool.map(one, jobs))


def select_methods(model: onnx.ModelProto, candidates: Mapping[str, Mapping[str, float]],
                   feeds: Sequence[Mapping[str, np.ndarray]], reference: Sequence[Mapping[str, np.ndarray]],
                   placement: QuantizeOptions | None = None, *, min_gain_db: float = 0.1,
                   window_db: float = 3.0, max_alternatives: int = 2, max_batch: int | None = None,
                   channel_means: Mapping[str, np.ndarray] | None = None,
                   scoring: ScoringSession | None = None, threads: int = 1) -> tuple[dict[str, str], SelectionReport]:
    """Choose a method per tensor from ``candidates`` (method -> tensor -> amax).

    ``feeds``/``reference``: calibration batches and the FP32 model's outputs on them.
    Returns ``(tensor -> method, report)``. Tensors the placement does not quantize
    (e.g. ONNX Runtime-only outputs when probing the TensorRT placement) follow
    their group's choice. ``window_db``: only methods whose whole-model score is within
    this of the best are tried on groups (the others already lose badly across the
    model; skipping them halves the scoring runs on our transformer). ``max_alternatives``:
    at most this many other methods (the best-scoring ones) are tried on each group, which
    bounds the scoring cost at ``len(candidates) + max_alternatives * groups`` evaluations.
    Deterministic for the same inputs. ``max_batch``: the model's fixed batch size, if it has one (the
    scored batches are then run as they are, never merged past it). ``scoring``: the probe session,
    if the caller built it already (else it is built here with ``placement``, ``channel_means``
    and ``threads``).
    """
    if not candidates:
        raise CalibrationError("method='auto' was given no candidate methods.")
    if not feeds:
        raise CalibrationError("method='auto' needs at least one calibration batch to score with.")
    t0 = time.perf_counter()
    if max_batch is None:
        feeds, reference = _merge_batches(feeds, reference)
    else:
        feeds, reference = [dict(f) for f in feeds], [dict(r) for r in reference]
    methods = list(candidates)
    tensors = list(next(iter(candidates.values())))
    scoring = scoring or ScoringSession(model, placement, channel_means, threads)
    evaluations = 0

    def score_all(choices: Sequence[Mapping[str, str]]) -> list[float]:
        """Output SQNR of each assignment; every (assignment, batch) run is one job."""
        nonlocal evaluations
        evaluations += len(choices)
        amaxes = [{t: candidates[c[t]][t] for t in tensors} for c in choices]
        outs = scoring.run_all([(a, f) for a in amaxes for f in feeds])
        k = len(feeds)
        return [output_sqnr_db(outs[i * k:(i + 1) * k], reference) for i in range(len(choices))]

    whole = dict(zip(methods, score_all([{t: m for t in tensors} for m in methods])))
    base = max(methods, key=lambda m: (whole[m], -methods.index(m)))
    choice = {t: base for t in tensors}
    best = whole[base]
    overrides: dict[str, str] = {}
    trials: dict[str, dict[str, float]] = {}
    groups = tensor_groups(model, tensors)
    ranked = sorted((m for m in methods if m != base), key=lambda m: (-whole[m], methods.index(m)))
    alternatives = [m for m in ranked if whole[m] >= whole[base] - window_db][:max(0, max_alternatives)]
    # larger groups first: they move the outputs most, later groups are judged on top of them
    for group, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        tried = [m for m in alternatives
                 if not all(abs(candidates[m][t] - candidates[choice[t]][t]) <= _SAME_AMAX_REL * candidates[choice[t]][t]
                            for t in members)]  # (nearly) the thresholds already in use: cannot gain, no run
        # the group's alternatives are scored on top of the same earlier choices: independent runs
        scores = score_all([{**choice, **{t: m for t in members}} for m in tried])
        trial_best, trial_method = best, None
        for m, sc in zip(tried, scores):
            trials.setdefault(group, {})[m] = sc
            if sc > trial_best + min_gain_db:
                trial_best, trial_method = sc, m
        if trial_method is not None:
            choice.update({t: trial_method for t in members})
            overrides[group] = trial_method
            best = trial_best
    report = SelectionReport(base, overrides, whole, trials, best, sum(_samples(f) for f in feeds), evaluations,
                             time.perf_counter() - t0)
    log.info("%s", report.summary())
    return choice, report
