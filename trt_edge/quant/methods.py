"""Calibration maths in NumPy: streaming |x| histograms and range selection.

Everything here is independent of ONNX and of any runtime, so it is tested on
synthetic distributions whose answer is known. The binning and the entropy and MSE
sweeps also have native kernels (:mod:`trt_edge.quant.native`, optional): the NumPy code
here is their reference, tested against them.

Conventions (TensorRT's, see docs TENSORRT.md): INT8 is symmetric with zero
point 0; a tensor's range is its ``amax`` (the clipping threshold of |x|) and
its scale is ``amax / 127``.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from ..errors import CalibrationError, InvalidInputError

INT8_MAX = 127
METHODS = ("entropy", "percentile", "max", "mse")
# Smallest scale we ever emit: a constant-zero tensor still needs a positive scale
# (ONNX QuantizeLinear and TensorRT both reject 0).
MIN_AMAX = 1e-8


@dataclasses.dataclass
class AbsHistogram:
    """A streaming histogram of |x| with uniform bins starting at 0.

    Guarantees, whatever order the batches come in:
    - memory is O(``2 * num_bins``), never O(samples);
    - bins stay uniform; the last bin contains the largest |x| seen;
    - the bin count stays in ``[num_bins, 2 * num_bins)`` once data is seen: when a
      batch exceeds the covered range, bins are appended at the same width, and
      when there are too many, adjacent pairs are merged (exact: counts move, no
      value is re-binned approximately).
    ``amax`` is the exact largest |x| seen (NaN/inf are counted and ignored).
    """

    num_bins: int = 2048
    counts: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    bin_width: float = 0.0
    amax: float = 0.0
    total: int = 0
    nonfinite: int = 0
    zeros_before_range: int = 0  # all-zero batches seen before any non-zero value

    def __post_init__(self) -> None:
        if self.num_bins < 2 * 128:
            raise InvalidInputError(f"num_bins must be >= 256 for INT8 calibration, got {self.num_bins}.")

    @property
    def edges(self) -> np.ndarray:
        return np.arange(self.counts.size + 1, dtype=np.float64) * self.bin_width

    def update(self, x: np.ndarray, scratch: "HistogramScratch | None" = None,
               batch_max: float | None = None) -> None:
        """Add the absolute values of ``x`` (any shape, float) to the histogram.

        ``x`` is never modified. ``scratch``: reusable work buffers (give one per
        thread to avoid allocating per call); the counts do not depend on it.
        ``batch_max``: max |x|, if the caller already computed it *and* every value is finite
        (the collection pass reads it natively with the channel sums).
        """
        x = np.asarray(x)
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        flat = x.reshape(-1)
        if flat.size == 0:
            return
        if batch_max is None:
            # max |x| without materialising |x|: two read-only passes.
            batch_max = max(float(flat.max()), -float(flat.min()))
        if not math.isfinite(batch_max):  # NaN propagates through max; inf is the max: filter once
            finite = np.isfinite(flat)
            self.nonfinite += int(flat.size - np.count_nonzero(finite))
            flat = flat[finite]
            if flat.size == 0:
                return
            batch_max = max(float(flat.max()), -float(flat.min()))
        if self.bin_width == 0.0:
            if batch_max == 0.0:
                # All zeros so far: count them, decide the width when data arrives.
                self.total += flat.size
                self.zeros_before_range += flat.size
                return
            self.bin_width = batch_max / self.num_bins
            self.counts = np.zeros(self.num_bins, np.int64)
            self.counts[0] += self.zeros_before_range
        self._grow_to(batch_max)
        (scratch or HistogramScratch()).add_abs(flat, np.float32(1.0 / self.bin_width), self.counts)
        self.total += flat.size
        self.amax = max(self.amax, batch_max)

    def _grow_to(self, value: float) -> None:
        needed = int(math.floor(value / self.bin_width)) + 1
        if needed <= self.counts.size:
            return
        while needed >= 2 * self.num_bins:
            # Merge neighbour pairs: width doubles, bin count halves (pad to even).
            c = self.counts
            if c.size % 2:
                c = np.append(c, 0)
            self.counts = c.reshape(-1, 2).sum(axis=1)
            self.bin_width *= 2.0
            needed = int(math.floor(value / self.bin_width)) + 1
        if needed > self.counts.size:
            self.counts = np.concatenate([self.counts, np.zeros(needed - self.counts.size, np.int64)])

    def merge(self, other: "AbsHistogram") -> None:
        """Add another histogram's counts (used to combine workers)."""
        if other.bin_width == 0.0:
            self.total += other.total
            return
        # Re-add other's counts at its bin centres: exact when widths agree.
        centres = (np.arange(other.counts.size) + 0.5) * other.bin_width
        if self.bin_width == 0.0:
            self.bin_width = other.bin_width
            self.counts = np.zeros(max(other.counts.size, self.num_bins), np.int64)
        self._grow_to(other.amax)
        idx = np.minimum((centres / self.bin_width).astype(np.int64), self.counts.size - 1)
        np.add.at(self.counts, idx, other.counts)
        self.total += other.total
        self.amax = max(self.amax, other.amax)


class HistogramScratch:
    """Fixed-size work buffers for :meth:`AbsHistogram.update` (not thread-safe: one per thread).

    Values are binned in chunks that fit in the CPU cache, so the memory used is
    O(chunk) whatever the tensor size, and no full-size temporary is allocated.
    """

    CHUNK = 1 << 16

    def __init__(self) -> None:
        self._f = np.empty(self.CHUNK, np.float32)
        self._i = np.empty(self.CHUNK, np.intp)

    def add_abs(self, flat: np.ndarray, inv_width: np.float32, counts: np.ndarray) -> None:
        """``counts[min(int(|v| * inv_width), len - 1)] += 1`` for every finite ``v`` in ``flat``.

        Same float32 maths as ``abs`` then multiply by ``inv_width`` then truncate
        (the values are >= 0); indices past the last bin (the batch max, after
        float32 rounding) are folded into the last bin.
        """
        from . import native  # here, not at import: `python -m trt_edge.quant.native` builds it
        if flat.flags.c_contiguous and native.abs_histogram_f32(flat, inv_width, counts):
            return  # the same counts from csrc/calib, ~2.4x faster (optional: built by pip install)
        nb = counts.size
        for k in range(0, flat.size, self.CHUNK):
            part = flat[k:k + self.CHUNK]
            f = self._f[:part.size]
            i = self._i[:part.size]
            np.abs(part, out=f)
            np.multiply(f, inv_width, out=f)
            np.copyto(i, f, casting="unsafe")        # truncation toward zero
            binned = np.bincount(i, minlength=nb)    # intp input: no conversion copy
            if binned.size > nb:
                binned[nb - 1] += binned[nb:].sum()
            counts += binned[:nb]


# --------------------------------------------------------------------------- methods

def max_amax(hist: AbsHistogram) -> float:
    """The largest |x| seen: no clipping at all."""
    return max(hist.amax, MIN_AMAX)


def percentile_amax(hist: AbsHistogram, percentile: float = 99.99) -> float:
    """Smallest bin edge below which ``percentile`` % of |x| lies (never above amax)."""
    if not 0.0 < percentile <= 100.0:
        raise InvalidInputError(f"percentile must be in (0, 100], got {percentile}.")
    if hist.counts.size == 0:
        return MIN_AMAX
    cdf = np.cumsum(hist.counts) / max(hist.counts.sum(), 1)
    idx = int(np.searchsorted(cdf, percentile / 100.0, side="left"))
    idx = min(idx, hist.counts.size - 1)
    return float(max(min((idx + 1) * hist.bin_width, hist.amax), MIN_AMAX))


_KL_BLOCK = 256


@functools.lru_cache(maxsize=4)
def _level_bounds_table(num_quant_bins: int, upto: int) -> np.ndarray:
    """``table[i, j] = ceil(j * i / L)`` for every slice length ``i < upto`` (int32, read-only).

    A row depends only on ``i`` and ``L``, not on the histogram, so one table serves every
    tensor of a calibration (``auto`` searches ~50-70 of them); ``upto`` is rounded up to a
    power of two so a few tables cover every bin count, ~4 MB at 8,192 bins.
    """
    i = np.arange(upto, dtype=np.int64)[:, None]
    j = np.arange(num_quant_bins + 1, dtype=np.int64)[None, :]
    table = (-((-j * i) // num_quant_bins)).astype(np.int32)
    table.flags.writeable = False
    return table


def _level_bounds(start: int, nb: int, num_quant_bins: int) -> np.ndarray:
    """``bounds[c, j] = ceil(j * i / L)`` for every candidate length ``i`` in ``[start, nb]``.

    Level ``j`` covers bins ``[bounds[c, j], bounds[c, j + 1])``: exact integer maths.
    """
    upto = 1 << max(int(nb).bit_length(), 12)  # > nb
    return _level_bounds_table(num_quant_bins, upto)[start:nb + 1]


def entropy_kl_curve(counts: np.ndarray, num_quant_bins: int = 128, start_bin: int | None = None,
                     suppress_zero_bin: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """KL divergence of every candidate threshold, as in TensorRT's EntropyCalibration2.

    Follows NVIDIA's published reference (pytorch-quantization ``calib/histogram.py``):
    - ``suppress_zero_bin``: the first bin's count is replaced by the second's, so
      the spike of exact zeros after a ReLU does not dominate the search;
    - for each candidate ``i`` (threshold = right edge of bin ``i - 1``), P is
      ``counts[:i]`` with every count above the threshold added to its last bin;
    - Q: bin ``k < i`` belongs to level ``floor(k * L / i)`` (``L`` = ``num_quant_bins``,
      128 for int8: 127 magnitudes and zero); each level's clipped count is spread
      evenly over the level's non-empty bins (empty bins get 0);
    - KL(P || Q) with both normalised; ``inf`` where Q is 0 but P is not.
    Returns ``(candidates, kl)``.

    Vectorised: KL = (sum P log P)/T - log T - (1/T) sum_levels P_level log(Q_level / (n_level S_Q)),
    every term read off cumulative sums: O(candidates x levels), no Python loop.
    """
    h = np.asarray(counts, dtype=np.float64).copy()
    if suppress_zero_bin and h.size > 1:
        h[0] = h[1]
    nb = h.size
    start = num_quant_bins if start_bin is None else start_bin
    if nb < start:
        raise CalibrationError(f"Histogram has {nb} bins, fewer than the {start} quantized levels.")
    cand = np.arange(start, nb + 1)                       # slice lengths i
    total = h.sum()
    if total <= 0:
        return cand, np.zeros(cand.size)
    csum = np.concatenate([[0.0], np.cumsum(h)])
    cnz = np.concatenate([[0.0], np.cumsum(h > 0)])
    safe_h = np.where(h > 0, h, 1.0)
    chlogh = np.concatenate([[0.0], np.cumsum(h * np.log(safe_h))])

    outliers = total - csum[cand]                          # counts above the threshold
    last = h[cand - 1]
    p_last = last + outliers
    # sum over k < i of P_k log P_k (unnormalised); P differs from h only at i - 1.
    plogp = chlogh[cand - 1] + p_last * np.log(np.where(p_last > 0, p_last, 1.0))

    s_q = csum[cand]                                       # sum of Q == clipped total
    term = _level_terms(csum, cnz, num_quant_bins, start, outliers, total, s_q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = (plogp - term) / total - math.log(total)
    # P > 0 where Q == 0: the outliers landed on an empty bin, or nothing survived the clip.
    bad = ((last == 0) & (outliers > 0)) | (s_q <= 0)
    kl = np.where(bad | ~np.isfinite(kl), np.inf, kl)
    return cand, kl


def _level_terms(csum: np.ndarray, cnz: np.ndarray, num_quant_bins: int, start: int,
                 outliers: np.ndarray, total: float, s_q: np.ndarray) -> np.ndarray:
    """``sum_l P_l log(Q_l / (n_l S_Q))`` for each candidate (see :func:`entropy_kl_curve`):
    natively where the kernel is built (2-2.5x faster on real models' tensors), else this NumPy
    code, the reference."""
    from . import native
    log_s_q = np.log(np.where(s_q > 0, s_q, 1.0))
    term = native.entropy_level_terms(csum, cnz, num_quant_bins, start, outliers)
    if term is not None:
        return term - total * log_s_q
    term = np.empty(outliers.size)
    # Candidates in blocks: the (candidates x levels) temporaries stay cache-sized
    # (and memory O(block), not O(bins x levels)); rows are independent, so the
    # result does not depend on the block size.
    for lo in range(0, outliers.size, _KL_BLOCK):
        hi = min(lo + _KL_BLOCK, outliers.size)
        bounds = _level_bounds(start + lo, start + hi - 1, num_quant_bins)
        g = np.take(csum, bounds)
        q_level = g[:, 1:] - g[:, :-1]                     # clipped counts per level
        g = np.take(cnz, bounds)
        n_level = g[:, 1:] - g[:, :-1]                     # non-empty bins per level
        # log of each level's mean count (0 where the level is empty: Q_l = P_l = 0 there, except
        # in the last level when outliers land on an empty bin, which `bad` marks below)
        log_q = np.log(np.divide(q_level, n_level, out=np.ones_like(q_level), where=q_level > 0))
        # P equals the clipped counts but in the last level, which also holds the outliers; and
        # sum_l P_l is the total, so log(S_Q) comes out of the sum:
        # sum_l P_l log(Q_l / (n_l S_Q)) = sum_l q_l log(Q_l / n_l) + outliers log(Q_L / n_L) - total log S_Q
        term[lo:hi] = (np.einsum("ij,ij->i", q_level, log_q) + outliers[lo:hi] * log_q[:, -1]
                       - total * log_s_q[lo:hi])
    return term


_KL_TIE_ABS = 1e-12
_KL_TIE_REL = 1e-9  # the native and NumPy curves agree to ~3e-11 relative (tested on real models)


def entropy_amax(hist: AbsHistogram, num_quant_bins: int = 128, suppress_zero_bin: bool = True) -> float:
    """Threshold minimising KL(P || Q) (TensorRT EntropyCalibration2); ties -> the largest."""
    if hist.counts.size == 0:
        return MIN_AMAX
    counts = hist.counts
    if counts.size < num_quant_bins:  # tiny histograms: no clipping is possible anyway
        return max_amax(hist)
    cand, kl = entropy_kl_curve(counts, num_quant_bins, suppress_zero_bin=suppress_zero_bin)
    if not np.isfinite(kl).any():
        return max_amax(hist)
    # ties -> the largest threshold; a tie is within float noise of the minimum (the KL of two
    # candidates whose P and Q coincide is 0 in exact maths, +-1e-15 in either summation order)
    low = float(np.min(kl))
    tied = np.flatnonzero(kl <= low + _KL_TIE_ABS + _KL_TIE_REL * abs(low))
    best = int(cand[tied[-1]])
    return float(max(min(best * hist.bin_width, hist.amax), MIN_AMAX))


_MSE_CHUNK_ELEMENTS = 1 << 18


def _mse_errors(c: np.ndarray, w: np.ndarray, cand: np.ndarray, bin_width: float, amax: float,
                levels: int) -> np.ndarray:
    """Weighted squared fake-quantization error of the bin centres ``c`` for each candidate
    (natively where the kernel is built, ~5x faster; this NumPy loop is the reference)."""
    from . import native
    thresholds = np.minimum(cand * bin_width, max(amax, MIN_AMAX))
    native_err = native.mse_errors(c, w, thresholds, levels)
    if native_err is not None:
        return native_err
    out = np.empty(cand.size)
    # chunk the (candidates x occupied bins) matrix: ~2 MB per temporary, cache-friendly, and
    # several tensors' searches run at once on the calibration thread pool (a 4 M-element chunk
    # cost ~40 MB of peak RSS per thread on MNIST)
    chunk = max(1, _MSE_CHUNK_ELEMENTS // max(c.size, 1))
    for k in range(0, cand.size, chunk):
        t = thresholds[k:k + chunk, None]
        s = t / levels
        q = np.clip(np.round(c[None, :] / s), 0, levels) * s
        out[k:k + chunk] = ((q - c[None, :]) ** 2 * w[None, :]).sum(axis=1)
    return out


def mse_amax(hist: AbsHistogram, levels: int = INT8_MAX, max_candidates: int = 512) -> float:
    """Threshold minimising the expected squared error of symmetric fake quantization.

    Each histogram bin is represented by its centre; for a threshold ``t`` the
    error of a value ``c`` is ``(clip(round(c / s), 0, levels) * s - c)^2`` with
    ``s = t / levels``. Candidates are bin edges from ``levels`` bins upwards, searched
    coarse to fine: 64 evenly spread edges first, then every edge (at most ``max_candidates``,
    evenly spread) between the neighbours of the best coarse one. The error curve is smooth at
    the coarse spacing (clipping error falls, rounding error grows with ``t``): on MobileNetV2's
    64 activations the chosen error is within -0.3%..+0.2% of a 512-edge grid's, in 40% of its
    time, which matters because ``auto`` computes it for every tensor.
    """
    if hist.counts.size == 0:
        return MIN_AMAX
    nb = hist.counts.size
    centres = (np.arange(nb) + 0.5) * hist.bin_width
    keep = hist.counts > 0
    c = centres[keep]
    w = hist.counts[keep].astype(np.float64)
    lo = min(levels, nb)
    coarse = np.unique(np.linspace(lo, nb, min(64, nb - lo + 1)).round().astype(np.int64))
    err = _mse_errors(c, w, coarse, hist.bin_width, hist.amax, levels)
    i = int(np.argmin(err))
    a, b = coarse[max(i - 1, 0)], coarse[min(i + 1, coarse.size - 1)]
    fine = np.unique(np.linspace(a, b, min(max_candidates, b - a + 1)).round().astype(np.int64))
    fine_err = _mse_errors(c, w, fine, hist.bin_width, hist.amax, levels)
    j = int(np.argmin(fine_err))
    best = fine[j] if fine_err[j] <= err[i] else coarse[i]
    return float(max(min(best * hist.bin_width, max(hist.amax, MIN_AMAX)), MIN_AMAX))


def compute_amax(hist: AbsHistogram, method: str, *, percentile: float = 99.99,
                 num_quant_bins: int = 128) -> float:
    """Dispatch to one method by name."""
    if method == "entropy":
        return entropy_amax(hist, num_quant_bins)
    if method == "percentile":
        return percentile_amax(hist, percentile)
    if method == "max":
        return max_amax(hist)
    if method == "mse":
        return mse_amax(hist)
    raise InvalidInputError(f"Unknown calibration method '{method}'; use one of {', '.join(METHODS)}.")


# --------------------------------------------------------------------------- weights

def per_channel_amax(weight: np.ndarray, axis: int) -> np.ndarray:
    """max |w| over every axis but ``axis`` (the output-channel axis); >= MIN_AMAX."""
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim == 0:
        return np.array([max(float(abs(w)), MIN_AMAX)], np.float32)
    axis = axis % w.ndim
    other = tuple(a for a in range(w.ndim) if a != axis)
    amax = np.abs(w).max(axis=other) if other else np.abs(w)
    return np.maximum(amax, MIN_AMAX).astype(np.float32)


def symmetric_scale(amax: np.ndarray | float, levels: int = INT8_MAX) -> np.ndarray:
    """Scale for symmetric INT8 with zero point 0: ``amax / 127`` as float32."""
    return (np.maximum(np.asarray(amax, dtype=np.float64), MIN_AMAX) / levels).astype(np.float32)


def quantize_symmetric(x: np.ndarray, scale: np.ndarray | float, axis: int | None = None) -> np.ndarray:
    """ONNX QuantizeLinear semantics (round half to even, saturate) to int8."""
    s = np.asarray(scale, dtype=np.float32)
    if axis is not None and s.ndim == 1:
        shape = [1] * x.ndim
        shape[axis % x.ndim] = -1
        s = s.reshape(shape)
    return np.clip(np.rint(np.asarray(x, np.float32) / s), -128, 127).astype(np.int8)


def fake_quantize(x: np.ndarray, amax: float, levels: int = INT8_MAX) -> np.ndarray:
    """Quantize-dequantize ``x`` with a symmetric threshold (test and analysis helper)."""
    s = float(symmetric_scale(amax, levels))
    return (np.clip(np.rint(np.asarray(x, np.float32) / s), -levels, levels) * s).astype(np.float32)
