"""Choosing a sparse format (CSR, or BSR with a block shape) by measured speed.

The best block shape depends on how the weight was pruned (unstructured pruning leaves
few dense blocks: every stored block carries zeros) and on the kernel and batch size,
so the choice is made by timing the candidates on the actual matrix, not by a rule.
Candidates whose blocks would be mostly zeros (``min_fill``) are not even timed.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np

from ..errors import InvalidInputError
from .formats import BLOCK_SHAPES, SparseWeight, convert

#: A timer takes (weight or None for dense, x, dense matrix) and returns seconds per call.
Timer = Callable[[SparseWeight | None, np.ndarray, np.ndarray], float]


@dataclasses.dataclass(frozen=True)
class SelectOptions:
    """``batch``: rows of X to time with (the deployment batch).
    ``blocks``: BSR block shapes to consider besides CSR.
    ``include_dense``: also time the dense product; if it wins the choice is ``"dense"``.
    ``min_fill``: skip a block shape whose stored blocks would be less than this fraction
    non-zero. ``repeats``: timed calls per candidate (median taken), after one warm-up.
    ``num_threads``: CPU kernel threads (0 = library default).
    """

    batch: int = 1
    blocks: Sequence[tuple[int, int]] = BLOCK_SHAPES
    include_dense: bool = True
    min_fill: float = 0.5
    repeats: int = 5
    num_threads: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch < 1 or self.repeats < 1:
            raise InvalidInputError("batch and repeats must be >= 1.")
        if not 0.0 <= self.min_fill <= 1.0:
            raise InvalidInputError("min_fill must be within [0, 1].")


@dataclasses.dataclass(frozen=True)
class FormatChoice:
    """The winner (``format`` in {"csr", "bsr", "dense"}, ``block``) and every timing."""

    format: str
    block: tuple[int, int]
    seconds: dict[str, float]
    skipped: dict[str, str]

    @property
    def label(self) -> str:
        return format_label(self.format, self.block)


def format_label(fmt: str, block: tuple[int, int]) -> str:
    return f"bsr{block[0]}x{block[1]}" if fmt == "bsr" else fmt


def block_fill(dense: np.ndarray, block: tuple[int, int]) -> float:
    """Fraction of stored BSR entries that are non-zero (1.0 = blocks are fully dense)."""
    br, bc = block
    n, k = dense.shape
    nbr, nbc = -(-n // br), -(-k // bc)
    padded = np.zeros((nbr * br, nbc * bc), dtype=bool)
    padded[:n, :k] = dense != 0
    blocks = padded.reshape(nbr, br, nbc, bc).any(axis=(1, 3))
    stored = int(blocks.sum()) * br * bc
    return 1.0 if stored == 0 else float(np.count_nonzero(dense)) / stored


def cpu_timer(repeats: int, num_threads: int = 0) -> Timer:
    """Median wall time of the native CPU kernel (or ``x @ W.T`` for dense)."""
    from . import cpu

    def timer(weight: SparseWeight | None, x: np.ndarray, dense: np.ndarray) -> float:
        if weight is None:
            wt = np.ascontiguousarray(dense.T)
            out_d = np.empty((x.shape[0], dense.shape[0]), dtype=dense.dtype)
            def call() -> object:
                return np.matmul(x, wt, out=out_d)
        else:
            out = np.empty((x.shape[0], weight.shape[0]), dtype=weight.values.dtype)
            kernel = cpu.PreparedSparseLinear(weight, num_threads=num_threads)
            def call() -> object:
                return kernel(x, out)
        call()  # warm-up (page-in, thread pool start)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            call()
            times.append(time.perf_counter_ns() - t0)
        return float(np.median(times)) * 1e-9

    return timer


def choose_format(dense: np.ndarray, options: SelectOptions | None = None,
                  timer: Timer | None = None) -> FormatChoice:
    """Time CSR, each admissible BSR block shape (and dense) on ``dense``; return the fastest.

    ``timer`` defaults to the native CPU kernel (:func:`cpu_timer`); pass another (e.g. one
    timing the CUDA kernels) to choose for a different target.
    """
    options = options or SelectOptions()
    dense = np.asarray(dense)
    if dense.ndim != 2:
        raise InvalidInputError(f"choose_format needs a 2-D weight, got shape {dense.shape}.")
    timer = timer or cpu_timer(options.repeats, options.num_threads)
    rng = np.random.default_rng(options.seed)
    dtype = dense.dtype if dense.dtype in (np.float16, np.float32) else np.float32
    x = rng.standard_normal((options.batch, dense.shape[1])).astype(dtype)
    seconds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    candidates: list[tuple[str, tuple[int, int]]] = [("csr", (1, 1))]
    for block in options.blocks:
        fill = block_fill(dense, block)
        if fill < options.min_fill:
            skipped[format_label("bsr", block)] = f"fill {fill:.2f} < {options.min_fill}"
        else:
            candidates.append(("bsr", tuple(block)))  # type: ignore[arg-type]
    best: tuple[float, str, tuple[int, int]] | None = None
    for fmt, block in candidates:
        weight = convert(dense.astype(dtype, copy=False), fmt, block)
        t = timer(weight, x, dense)
        seconds[format_label(fmt, block)] = t
        if best is None or t < best[0]:
            best = (t, fmt, block)
    if options.include_dense:
        t = timer(None, x, dense.astype(dtype, copy=False))
        seconds["dense"] = t
        assert best is not None
        if t < best[0]:
            best = (t, "dense", (1, 1))
    assert best is not None
    return FormatChoice(best[1], best[2], seconds, skipped)
