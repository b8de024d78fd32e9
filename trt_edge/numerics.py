"""Numerical comparison of model outputs: the one compare helper.

Used by export verification, graph-pass verification, ``trt-edge compare`` and
the precision checks, so every place reports the same figures.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import InvalidInputError, VerificationError


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Element-wise check ``|a - b| <= atol + rtol * |b|`` (b is the reference)."""

    rtol: float
    atol: float


# Per-precision defaults (TESTING.md): never a blanket 1e-1.
FP32_EXACT = Tolerance(rtol=1e-5, atol=1e-6)      # a rewrite that must not change maths
FP32_EXPORT = Tolerance(rtol=1e-4, atol=1e-5)     # torch kernels vs ORT kernels
FP16 = Tolerance(rtol=1e-2, atol=1e-3)
TOLERANCES = {"fp32": FP32_EXACT, "export": FP32_EXPORT, "fp16": FP16}


@dataclasses.dataclass
class OutputComparison:
    name: str
    shape: tuple[int, ...]
    max_abs_error: float
    max_rel_error: float
    mean_abs_error: float
    nmse: float           # ||a-b||^2 / ||b||^2
    sqnr_db: float        # 10 log10(||b||^2 / ||a-b||^2); inf when identical
    cosine: float
    top1_agreement: float | None = None  # classifiers: fraction of rows with the same argmax
    passed: bool | None = None
    violations: int = 0  # elements outside the tolerance


@dataclasses.dataclass
class ComparisonReport:
    outputs: list[OutputComparison]
    tolerance: Tolerance | None = None

    @property
    def passed(self) -> bool:
        return all(o.passed is not False for o in self.outputs)

    def worst(self) -> OutputComparison:
        return max(self.outputs, key=lambda o: o.max_abs_error)

    def table(self) -> str:
        lines = [f"{'output':<24}{'shape':<18}{'max_abs':>11}{'max_rel':>11}{'nmse':>11}"
                 f"{'sqnr_dB':>9}{'top1':>7}  ok"]
        for o in self.outputs:
            top1 = "-" if o.top1_agreement is None else f"{o.top1_agreement:.3f}"
            ok = "-" if o.passed is None else ("yes" if o.passed else "NO")
            lines.append(f"{o.name[:23]:<24}{str(o.shape)[:17]:<18}{o.max_abs_error:>11.3e}"
                         f"{o.max_rel_error:>11.3e}{o.nmse:>11.3e}{o.sqnr_db:>9.1f}{top1:>7}  {ok}")
        return "\n".join(lines)


def compare_arrays(name: str, actual: np.ndarray, reference: np.ndarray,
                   tolerance: Tolerance | None = None, classifier: bool = False) -> OutputComparison:
    a = np.asarray(actual)
    b = np.asarray(reference)
    if a.shape != b.shape:
        raise VerificationError(
            f"Output '{name}' has shape {a.shape} but the reference has {b.shape}.")
    if a.dtype == np.bool_ or b.dtype == np.bool_ or np.issubdtype(b.dtype, np.integer):
        mismatch = int(np.count_nonzero(a != b))
        return OutputComparison(name, tuple(b.shape), float(mismatch > 0), float(mismatch > 0),
                                mismatch / max(b.size, 1), 0.0 if mismatch == 0 else 1.0,
                                math.inf if mismatch == 0 else 0.0, 1.0 if mismatch == 0 else 0.0,
                                None, None if tolerance is None else mismatch == 0, mismatch)
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    if a64.size == 0:
        return OutputComparison(name, tuple(b.shape), 0.0, 0.0, 0.0, 0.0, math.inf, 1.0,
                                None, None if tolerance is None else True, 0)
    finite = np.isfinite(a64) & np.isfinite(b64)
    nan_mismatch = int(np.count_nonzero(np.isnan(a64) != np.isnan(b64)))
    diff = np.abs(a64 - b64)
    diff = np.where(finite, diff, np.where(a64 == b64, 0.0, np.inf))
    max_abs = float(diff.max())
    denom = np.abs(b64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(denom > 0, diff / denom, np.where(diff > 0, np.inf, 0.0))
    signal = float(np.sum(b64[finite] ** 2))
    noise = float(np.sum((a64[finite] - b64[finite]) ** 2))
    nmse = noise / signal if signal > 0 else (0.0 if noise == 0 else math.inf)
    sqnr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)
    na, nb = np.linalg.norm(a64[finite]), np.linalg.norm(b64[finite])
    cosine = float(np.dot(a64[finite], b64[finite]) / (na * nb)) if na > 0 and nb > 0 else \
        (1.0 if na == nb else 0.0)
    top1 = None
    if classifier and b.ndim >= 2:
        top1 = float(np.mean(np.argmax(a64.reshape(-1, b.shape[-1]), -1)
                             == np.argmax(b64.reshape(-1, b.shape[-1]), -1)))
    passed = None
    violations = 0
    if tolerance is not None:
        bad = diff > tolerance.atol + tolerance.rtol * denom
        violations = int(np.count_nonzero(bad)) + nan_mismatch
        passed = violations == 0
    return OutputComparison(name, tuple(b.shape), max_abs, float(rel.max()), float(diff[finite].mean())
                            if finite.any() else math.inf, nmse, sqnr, cosine, top1, passed, violations)


def compare_outputs(actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                    tolerance: Tolerance | None = None, classifier: bool = False,
                    names: Sequence[str] | None = None) -> ComparisonReport:
    """Compare every output present in ``reference`` (or ``names``)."""
    names = list(names) if names is not None else list(reference)
    missing = [n for n in names if n not in actual]
    if missing:
        raise InvalidInputError(f"Outputs {missing} are missing from the compared results "
                                f"(have {sorted(actual)}). Compare models with the same outputs.")
    return ComparisonReport([compare_arrays(n, actual[n], reference[n], tolerance, classifier)
                             for n in names], tolerance)


def assert_close(actual: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                 tolerance: Tolerance, what: str = "outputs") -> ComparisonReport:
    report = compare_outputs(actual, reference, tolerance)
    if not report.passed:
        raise VerificationError(
            f"{what} differ beyond rtol={tolerance.rtol:g}, atol={tolerance.atol:g}:\n"
            f"{report.table()}", report)
    return report


def nonfinite_output(outputs: Mapping[str, Any]) -> str | None:
    """The name of the first float output holding NaN or inf (None: all finite)."""
    for name, arr in outputs.items():
        a = np.asarray(arr)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            return name
    return None
