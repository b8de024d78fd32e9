"""Choosing a sparse format (CSR, or BSR with a block shape) by measured speed.

The best block shape depends on how the weight was pruned (unstructured pruning leaves
few dense blocks: every stored block carries zeros) and on the kernel and batch size,
so the choice is made by timing the candidates on the actual matrix, not by a rule.
Candidates whose blocks would be mostly zeros (``min_fill``) are not even timed.

With ``cpu_layouts=True`` the CPU-only packed CSR (uint16 column indices in column panels,
:class:`~trt_edge.sparse.formats.PackedCsrWeight`) is timed too, with both of its batch-1
loops (hardware gather, scalar loads: which is faster depends on the CPU), and with
``fp16_values=True`` also with FP16 value storage. Such a choice is for
:mod:`trt_edge.sparse.cpu` callers; the ONNX op and the TensorRT plugin take CSR/BSR only.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np

from ..errors import InvalidInputError
from .formats import (BLOCK_SHAPES, AnyCpuWeight, PackedCsrWeight, SparseWeight, convert, to_csr,
                      to_packed_csr)

#: A timer takes (weight or None for dense, x, dense matrix) and returns seconds per call.
#: Packed-CSR candidates (``cpu_layouts``) also pass ``variant=`` ("gather" | "loads").
Timer = Callable[..., float]

#: Batch-1 loops of the packed CSR kernel that ``cpu_layouts`` times.
PACKED_VARIANTS = ("gather", "loads")


@dataclasses.dataclass(frozen=True)
class SelectOptions:
    """``batch``: rows of X to time with (the deployment batch).
    ``blocks``: BSR block shapes to consider besides CSR.
    ``include_dense``: also time the dense product; if it wins the choice is ``"dense"``.
    ``min_fill``: skip a block shape whose stored blocks would be less than this fraction
    non-zero. ``repeats``: timed calls per candidate (median taken), after one warm-up.
    ``num_threads``: CPU kernel threads (0 = library default).
    ``cpu_layouts``: also time the CPU-only packed CSR (see the module docstring).
    ``fp16_values``: with ``cpu_layouts``, also packed CSR with FP16 value storage (the
    weights are rounded to FP16: relative error <= 2**-11 each; activations stay FP32).
    """

    batch: int = 1
    blocks: Sequence[tuple[int, int]] = BLOCK_SHAPES
    include_dense: bool = True
    min_fill: float = 0.5
    repeats: int = 5
    num_threads: int = 0
    seed: int = 0
    cpu_layouts: bool = False
    fp16_values: bool = False

    def __post_init__(self) -> None:
        if self.batch < 1 or self.repeats < 1:
            raise InvalidInputError("batch and repeats must be >= 1.")
        if not 0.0 <= self.min_fill <= 1.0:
            raise InvalidInputError("min_fill must be within [0, 1].")
        if self.fp16_values and not self.cpu_layouts:
            raise InvalidInputError("fp16_values applies to the packed CPU layout: set cpu_layouts=True too.")


@dataclasses.dataclass(frozen=True)
class FormatChoice:
    """The winner (``format`` in {"csr", "bsr", "dense", "pcsr"}, ``block``) and every timing.

    For ``"pcsr"`` (packed CSR, CPU only) ``variant`` is its batch-1 loop and
    ``value_dtype`` its value storage.
    """

    format: str
    block: tuple[int, int]
    seconds: dict[str, float]
    skipped: dict[str, str]
    variant: str = "auto"
    value_dtype: str = "float32"

    @property
    def label(self) -> str:
        return format_label(self.format, self.block, self.variant, self.value_dtype)


def format_label(fmt: str, block: tuple[int, int], variant: str = "auto",
                 value_dtype: str = "float32") -> str:
    if fmt == "bsr":
        return f"bsr{block[0]}x{block[1]}"
    if fmt == "pcsr":
        return f"pcsr-{variant}" + ("-f16" if value_dtype == "float16" else "")
    return fmt


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

    def timer(weight: AnyCpuWeight | None, x: np.ndarray, dense: np.ndarray,
              variant: str = "auto") -> float:
        if weight is None:
            wt = np.ascontiguousarray(dense.T)
            out_d = np.empty((x.shape[0], dense.shape[0]), dtype=dense.dtype)
            def call() -> object:
                return np.matmul(x, wt, out=out_d)
        else:
            kernel = cpu.PreparedSparseLinear(weight, num_threads=num_threads, variant=variant)
            xk = np.ascontiguousarray(x, dtype=kernel.dtype)
            out = np.empty((x.shape[0], weight.shape[0]), dtype=kernel.dtype)
            def call() -> object:
                return kernel(xk, out)
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
    packed: tuple[float, str, str] | None = None
    if options.cpu_layouts:
        csr = to_csr(dense.astype(dtype, copy=False))
        value_dtypes = [np.dtype(np.float32)] + ([np.dtype(np.float16)] if options.fp16_values else [])
        for vdt in value_dtypes:
            pw: PackedCsrWeight = to_packed_csr(csr, value_dtype=vdt)
            for variant in PACKED_VARIANTS:
                t = timer(pw, x, dense, variant=variant)
                seconds[format_label("pcsr", (1, 1), variant, vdt.name)] = t
                if packed is None or t < packed[0]:
                    packed = (t, variant, vdt.name)
        assert best is not None and packed is not None
        if packed[0] < best[0]:
            best = (packed[0], "pcsr", (1, 1))
    if options.include_dense:
        t = timer(None, x, dense.astype(dtype, copy=False))
        seconds["dense"] = t
        assert best is not None
        if t < best[0]:
            best = (t, "dense", (1, 1))
    assert best is not None
    if best[1] == "pcsr":
        assert packed is not None
        return FormatChoice("pcsr", (1, 1), seconds, skipped, variant=packed[1], value_dtype=packed[2])
    return FormatChoice(best[1], best[2], seconds, skipped)
