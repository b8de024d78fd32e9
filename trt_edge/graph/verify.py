"""Numerical verification of graph rewrites: feeds the original model accepts, and exact comparison.

The verifier runs the *original* model once per feed (through
:mod:`trt_edge.ort_exec`, ONNX Runtime with its own optimizer off) and keeps the
outputs as references; every rewritten model is then run on the same feeds in one
session and compared output by output:

* float tensors (float16/32/64, bfloat16, float8) within the tolerance, widened for
  types coarser than float32 (see :func:`tolerance_for`), NaN where the reference
  has NaN; a float reassociation allowance (errors within ``rtol`` of the output's
  own scale) covers kernels that sum in another order once a weight becomes an
  initializer;
* everything else exactly: integers, bools, strings, sequences (element by
  element), optional values (both absent or both equal), maps.

Generated feeds follow what the consumers of each input need (indices, axes, sizes,
a value an ``If`` tests for: :func:`trt_edge.onnx_io.feed_rules`). When the original
model fails on a generated feed, other sizes of the dynamic dimensions are tried;
when none runs, :class:`~trt_edge.errors.InvalidInputError` asks for real inputs
or shapes. A model the verifier cannot feed is never blamed on a pass.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import onnx

from ..errors import InvalidInputError, RunnerError, VerificationError
from ..numerics import Tolerance
from ..onnx_io import FeedRule, TensorSpec, feed_rules, graph_inputs, random_inputs

log = logging.getLogger(__name__)

# Sizes tried for dynamic dimensions when the original model rejects the first feed.
_RETRY_SIZES = (1, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_MAX_FEED_ELEMENTS = 1 << 24  # never try a feed larger than this (per input)


def tolerance_for(dtype: np.dtype, base: Tolerance) -> Tolerance:
    """``base`` for float32/float64; for coarser float types at least 2 ulp of that type."""
    if dtype in (np.float32, np.float64, np.complex64, np.complex128):
        return base
    try:
        import ml_dtypes
        eps = float(ml_dtypes.finfo(dtype).eps)
    except (ImportError, TypeError, ValueError):
        eps = float(np.finfo(dtype).eps)
    return Tolerance(max(base.rtol, 2 * eps), max(base.atol, 2 * eps))


def _is_float(dtype: np.dtype) -> bool:
    if dtype.kind in "fc":
        return True
    if dtype.kind == "V":
        try:
            import ml_dtypes
            ml_dtypes.finfo(dtype)
            return True
        except (ImportError, TypeError, ValueError):
            return False
    return False


@dataclasses.dataclass
class ValueDiff:
    """One output's comparison: ``ok``, the max abs error of float values, and a description."""

    name: str
    ok: bool
    max_abs_error: float
    detail: str


def _compare_float(a: np.ndarray, b: np.ndarray, tol: Tolerance) -> tuple[bool, float, str]:
    if a.dtype.kind == "c" or b.dtype.kind == "c":
        ok_r, err_r, _ = _compare_float(np.real(a), np.real(b), tol)
        ok_i, err_i, _ = _compare_float(np.imag(a), np.imag(b), tol)
        return ok_r and ok_i, max(err_r, err_i), "complex"
    a64 = a.astype(np.float32).astype(np.float64) if a.dtype.kind == "V" else a.astype(np.float64)
    b64 = b.astype(np.float32).astype(np.float64) if b.dtype.kind == "V" else b.astype(np.float64)
    if a64.size == 0:
        return True, 0.0, "empty"
    nan_a, nan_b = np.isnan(a64), np.isnan(b64)
    if not np.array_equal(nan_a, nan_b):
        return False, math.inf, f"NaN at {int(np.count_nonzero(nan_a != nan_b))} positions where the other has a number"
    inf_mismatch = (np.isinf(a64) | np.isinf(b64)) & ~nan_a & (a64 != b64)
    if inf_mismatch.any():
        return False, math.inf, f"inf mismatch at {int(np.count_nonzero(inf_mismatch))} positions"
    finite = np.isfinite(a64) & np.isfinite(b64)
    diff = np.abs(a64[finite] - b64[finite])
    if diff.size == 0:
        return True, 0.0, "no finite values"
    ref = np.abs(b64[finite])
    max_abs = float(diff.max())
    bad = int(np.count_nonzero(diff > tol.atol + tol.rtol * ref))
    if bad == 0:
        return True, max_abs, f"max abs {max_abs:.3e}"
    # Float reassociation: a kernel summing in another order (an initializer instead of a
    # computed weight takes another MatMul path) errs by a few ulp of the *output's* scale,
    # which can exceed rtol*|b| for elements near zero. Accept errors within rtol of the
    # largest reference magnitude (and atol), nothing looser.
    scale = float(ref.max())
    if max_abs <= tol.atol + tol.rtol * scale:
        return True, max_abs, f"max abs {max_abs:.3e} (within rtol of the output scale {scale:.3e})"
    worst = int(np.argmax(diff - (tol.atol + tol.rtol * ref)))
    return False, max_abs, (f"{bad} of {diff.size} values beyond rtol={tol.rtol:g}/atol={tol.atol:g}, "
                            f"max abs {max_abs:.3e}, e.g. {a64[finite][worst]!r} vs {b64[finite][worst]!r}")


def compare_value(name: str, actual: Any, reference: Any, tolerance: Tolerance) -> ValueDiff:
    """Compare one output value (tensor, sequence, optional, map) with its reference."""
    if reference is None or actual is None:
        ok = reference is None and actual is None
        return ValueDiff(name, ok, 0.0 if ok else math.inf,
                         "both absent" if ok else "one optional value is absent, the other is not")
    if isinstance(reference, dict) or isinstance(actual, dict):
        if not (isinstance(reference, dict) and isinstance(actual, dict)) or set(reference) != set(actual):
            return ValueDiff(name, False, math.inf, "maps with different keys")
        parts = [compare_value(f"{name}[{k!r}]", actual[k], reference[k], tolerance) for k in reference]
        return _merge(name, parts)
    if isinstance(reference, (list, tuple)) or isinstance(actual, (list, tuple)):
        if not (isinstance(reference, (list, tuple)) and isinstance(actual, (list, tuple))):
            return ValueDiff(name, False, math.inf, "a sequence vs a tensor")
        if len(reference) != len(actual):
            return ValueDiff(name, False, math.inf, f"sequence of {len(actual)} vs {len(reference)} elements")
        return _merge(name, [compare_value(f"{name}[{i}]", a, r, tolerance)
                             for i, (a, r) in enumerate(zip(actual, reference))])
    a, b = np.asarray(actual), np.asarray(reference)
    if a.shape != b.shape:
        return ValueDiff(name, False, math.inf, f"shape {a.shape} vs reference {b.shape}")
    if _is_float(b.dtype) or _is_float(a.dtype):
        if a.dtype != b.dtype:
            return ValueDiff(name, False, math.inf, f"dtype {a.dtype} vs reference {b.dtype}")
        ok, err, detail = _compare_float(a, b, tolerance_for(b.dtype, tolerance))
        return ValueDiff(name, ok, err, detail)
    if a.dtype.kind in "OUS" or b.dtype.kind in "OUS":
        same = a.shape == b.shape and all(x == y for x, y in zip(a.reshape(-1).tolist(), b.reshape(-1).tolist()))
        return ValueDiff(name, same, 0.0 if same else math.inf, "strings equal" if same else "strings differ")
    if a.dtype != b.dtype:
        return ValueDiff(name, False, math.inf, f"dtype {a.dtype} vs reference {b.dtype}")
    if b.dtype.kind == "V":  # int4/uint4 (ml_dtypes): compare the values
        a, b = a.astype(np.int16), b.astype(np.int16)
    mismatch = int(np.count_nonzero(a != b))
    return ValueDiff(name, mismatch == 0, 0.0 if mismatch == 0 else math.inf,
                     "exact" if mismatch == 0 else f"{mismatch} of {b.size} values differ (compared exactly)")


def _merge(name: str, parts: list[ValueDiff]) -> ValueDiff:
    bad = [p for p in parts if not p.ok]
    err = max((p.max_abs_error for p in parts), default=0.0)
    return ValueDiff(name, not bad, err, bad[0].detail if bad else f"{len(parts)} elements agree")


def compare_all(actual: Mapping[str, Any], reference: Mapping[str, Any],
                tolerance: Tolerance) -> list[ValueDiff]:
    out = []
    for name, ref in reference.items():
        if name not in actual:
            out.append(ValueDiff(name, False, math.inf, "output missing"))
        else:
            out.append(compare_value(name, actual[name], ref, tolerance))
    return out


@dataclasses.dataclass
class ValueReport:
    """The comparison of one feed's outputs (carried by the VerificationError a check raises)."""

    outputs: list[ValueDiff]

    @property
    def passed(self) -> bool:
        return all(d.ok for d in self.outputs)

    def table(self) -> str:
        return diff_table(self.outputs)


def diff_table(diffs: Sequence[ValueDiff]) -> str:
    lines = [f"{'output':<28}{'max_abs':>11}  ok   detail"]
    for d in diffs:
        lines.append(f"{d.name[:27]:<28}{d.max_abs_error:>11.3e}  {'yes' if d.ok else 'NO ':<4} {d.detail}")
    return "\n".join(lines)


def _describe(feed: Mapping[str, Any]) -> str:
    parts = []
    for k, v in feed.items():
        if isinstance(v, (list, tuple)):
            parts.append(f"{k}: sequence of {len(v)}")
        else:
            a = np.asarray(v)
            parts.append(f"{k}: {a.dtype}{list(a.shape)}" + (f"={a.item()!r}" if a.ndim == 0 else ""))
    return ", ".join(parts)


def _dynamic_axes(specs: Sequence[TensorSpec]) -> list[tuple[str, int, str]]:
    """(input, axis, key) of each dynamic dim; key: the dim's name, or ``INPUT:AXIS`` if unnamed."""
    out = []
    for spec in specs:
        for axis, d in enumerate(spec.shape or ()):
            if not (isinstance(d, int) and d >= 0):
                out.append((spec.name, axis, d if isinstance(d, str) and d else f"{spec.name}:{axis}"))
    return out


def dim_candidates(specs: Sequence[TensorSpec], base: int) -> Iterator[dict[str, int]]:
    """Sizes for the dynamic dims, best first: distinct sizes from ``base`` (so a rewrite that
    confuses two dynamic axes shows), then one size for all, then a small leading (batch) axis
    with larger other dims, for growing sizes."""
    axes = _dynamic_axes(specs)
    keys = list(dict.fromkeys(k for _, _, k in axes))
    named = [k for k in keys if ":" not in k]
    first = {k: base + i for i, k in enumerate(named)}
    first.update({k: 1 for k in keys if ":" in k})  # unnamed dims: 1 (the historical default)
    yield first
    if not keys:
        return
    lead_keys = {k for _, axis, k in axes if axis == 0}
    seen = [first]
    for size in (base, *_RETRY_SIZES):
        for cand in ({k: size for k in keys},
                     {k: (min(base, size) if k in lead_keys else size) for k in keys}):
            if cand not in seen:
                seen.append(cand)
                yield cand


def _feed_elements(feed: Mapping[str, Any]) -> int:
    return max((int(np.asarray(v).size) if not isinstance(v, (list, tuple)) else
                sum(int(np.asarray(x).size) for x in v) for v in feed.values()), default=0)


class Verifier:
    """Reference outputs of the original model, and comparison of rewritten models with them."""

    def __init__(self, model: onnx.ModelProto | bytes, *, specs: Sequence[TensorSpec],
                 dim_sizes: Sequence[int], shapes: Mapping[str, Sequence[int]],
                 values: Mapping[str, Any], real_inputs: Sequence[Mapping[str, Any]], seed: int,
                 rules_model: onnx.ModelProto | None = None) -> None:
        from ..ort_exec import make_session, run_model
        self.feeds: list[dict[str, Any]] = []
        self.references: list[dict[str, Any]] = []
        self.tried = 0
        try:
            session = make_session(model)
        except RunnerError as exc:
            raise InvalidInputError(
                f"ONNX Runtime cannot load the original model, so the optimizer cannot verify its "
                f"rewrites: {exc}. Use --no-verify to optimize without the numerical check.") from exc
        names = {s.name for s in specs}
        for src in (shapes, values):
            unknown = sorted(set(src) - names)
            if unknown:
                raise InvalidInputError(f"Shapes/values given for unknown inputs {unknown}; the model's "
                                        f"inputs are {sorted(names)}.")
        for i, feed in enumerate(real_inputs):
            feed = dict(feed)
            try:
                self.references.append(run_model(session, feed))
            except (RunnerError, InvalidInputError) as exc:
                raise InvalidInputError(f"The original model fails on the given input #{i} "
                                        f"({_describe(feed)}): {exc}. Fix the input file.") from exc
            self.feeds.append(feed)
        rules = feed_rules(rules_model) if rules_model is not None else {}
        # Last resorts for integer inputs no consumer rule covers: all zeros, then all ones
        # (valid indices, axes and pads for almost any consumer).
        free_ints = [s.name for s in specs if s.name not in rules and s.name not in values
                     and np.issubdtype(s.dtype, np.integer)]
        variants = [rules] + [{**rules, **{n: FeedRule(f"fallback {v}", fill=v) for n in free_ints}}
                              for v in (0, 1) if free_ints]
        last_error = ""
        for i, base in enumerate(dim_sizes):
            found = False
            for variant in variants:
                for cand in dim_candidates(specs, int(base)):
                    feed = random_inputs(specs, shapes=shapes, dim_values=cand, seed=seed + i,
                                         rules=variant, values=values)
                    if _feed_elements(feed) > _MAX_FEED_ELEMENTS:
                        continue
                    self.tried += 1
                    try:
                        ref = run_model(session, feed)
                    except RunnerError as exc:
                        last_error = f"generated feed {_describe(feed)}: {exc}"
                        log.debug("the original model rejects %s; trying other sizes", last_error)
                        continue
                    if any(_same_feed(feed, f) for f in self.feeds):
                        continue
                    self.feeds.append(feed)
                    self.references.append(ref)
                    found = True
                    break
                if found:
                    break
        if not self.feeds:
            rule_text = "; ".join(f"{k}: {r.why}" for k, r in rules.items())
            raise InvalidInputError(
                "The optimizer cannot verify this model: ONNX Runtime fails on the ORIGINAL model with "
                f"every verification feed it generated ({self.tried} tried; last: {last_error}). "
                + (f"Values chosen from the inputs' consumers: {rule_text}. " if rule_text else "")
                + "Give real inputs with --inputs FILE.npz (one array per input name), or shapes and "
                "values the model accepts with --shapes (e.g. x:1x3x640x640,sr=16000); --no-verify "
                "skips the numerical check.")

    def run(self, model: onnx.ModelProto | bytes) -> list[dict[str, Any]]:
        """Outputs of ``model`` on every feed, from one session."""
        from ..ort_exec import make_session, run_model
        session = make_session(model)
        return [run_model(session, f) for f in self.feeds]

    def check(self, model: onnx.ModelProto | bytes, what: str, tolerance: Tolerance,
              skip_hint: str) -> float:
        """Max abs error vs the original over all feeds; raises VerificationError beyond ``tolerance``."""
        try:
            outputs = self.run(model)
        except (RunnerError, InvalidInputError) as exc:
            raise VerificationError(f"{what} produced a model ONNX Runtime cannot run on the feeds "
                                    f"the original model runs on: {exc}. {skip_hint}") from exc
        worst = 0.0
        for i, (out, ref) in enumerate(zip(outputs, self.references)):
            diffs = compare_all(out, ref, tolerance)
            finite = [d.max_abs_error for d in diffs if d.ok]
            worst = max([worst, *finite])
            if not all(d.ok for d in diffs):
                raise VerificationError(
                    f"{what} changed the model's outputs beyond rtol={tolerance.rtol:g}, "
                    f"atol={tolerance.atol:g} on verification feed {i} ({_describe(self.feeds[i])}):\n"
                    f"{diff_table(diffs)}\n{skip_hint}", ValueReport(diffs))
        return worst


def _same_feed(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, (list, tuple)) or isinstance(y, (list, tuple)):
            return False
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.dtype != y.dtype or x.tobytes() != y.tobytes():
            return False
    return True


def build_verifier(model: onnx.ModelProto, *, dim_sizes: Sequence[int], shapes: Mapping[str, Sequence[int]],
                   values: Mapping[str, Any], real_inputs: Sequence[Mapping[str, Any]], seed: int,
                   data: bytes | None = None) -> Verifier:
    """A :class:`Verifier` for ``model`` (``data``: its serialisation, when already at hand)."""
    specs = graph_inputs(model)
    if dim_sizes:
        for spec in specs:
            if spec.shape is None and spec.kind == "tensor" and spec.name not in shapes \
                    and spec.name not in values:
                raise InvalidInputError(f"Input '{spec.name}' has unknown rank: give its shape "
                                        f"(--shapes {spec.name}:1x3x224x224) or use --no-verify.")
    return Verifier(data if data is not None else model, specs=specs, dim_sizes=dim_sizes, shapes=shapes,
                    values=values, real_inputs=real_inputs, seed=seed, rules_model=model)
