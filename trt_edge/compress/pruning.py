"""Magnitude pruning to a target sparsity: unstructured or in blocks, torch modules or ONNX.

The mask is computed by :func:`magnitude_mask` on the ``[out_features, in_features]``
matrix (a conv weight ``[out, in, kh, kw]`` is viewed as ``[out, in*kh*kw]``): blocks of
``block = (rows, cols)`` are ranked by mean absolute value and the weakest
``round(sparsity * n_blocks)`` are zeroed (``(1, 1)``: single weights, i.e. unstructured).
Per layer (each layer reaches the target) or global (one threshold across layers, so
layers that matter less lose more).

No fine-tuning is done here: pruning 90% of a trained network's weights without
retraining costs accuracy; :func:`prune_module` is the step a fine-tuning loop repeats,
and what the sparse kernels need as input.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import InvalidInputError


@dataclasses.dataclass(frozen=True)
class PruneOptions:
    """``sparsity``: target fraction of zeros in each pruned weight (per layer) or over all
    of them (``scope="global"``). ``block``: (rows, cols) pruned together.
    ``layer_types``: torch module class names to prune (``prune_module``).
    ``include``/``exclude``: regexes on the layer (or ONNX initializer) name.
    ``min_elements``: smaller weights are left alone (biases, tiny heads).
    """

    sparsity: float = 0.9
    block: tuple[int, int] = (1, 1)
    scope: str = "layer"
    layer_types: Sequence[str] = ("Linear",)
    include: str | None = None
    exclude: str | None = None
    min_elements: int = 1024

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise InvalidInputError(f"sparsity must be within [0, 1), got {self.sparsity}.")
        if self.scope not in ("layer", "global"):
            raise InvalidInputError(f"scope must be 'layer' or 'global', got '{self.scope}'.")
        if len(self.block) != 2 or min(self.block) < 1:
            raise InvalidInputError(f"block must be two positive ints, got {self.block}.")

    def selects(self, name: str) -> bool:
        if self.include and not re.search(self.include, name):
            return False
        return not (self.exclude and re.search(self.exclude, name))


@dataclasses.dataclass(frozen=True)
class PrunedLayer:
    name: str
    shape: tuple[int, ...]
    sparsity_before: float
    sparsity_after: float


def _block_scores(w2: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    br, bc = block
    n, k = w2.shape
    nbr, nbc = -(-n // br), -(-k // bc)
    padded = np.zeros((nbr * br, nbc * bc), dtype=np.float64)
    padded[:n, :k] = np.abs(w2)
    sums = padded.reshape(nbr, br, nbc, bc).sum(axis=(1, 3))
    counts = np.zeros_like(padded)
    counts[:n, :k] = 1.0
    sizes = counts.reshape(nbr, br, nbc, bc).sum(axis=(1, 3))
    return sums / sizes  # mean |w| over the block's real entries


def _expand(block_mask: np.ndarray, block: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    return np.repeat(np.repeat(block_mask, block[0], axis=0), block[1], axis=1)[:shape[0], :shape[1]]


def magnitude_mask(w: np.ndarray, sparsity: float, block: tuple[int, int] = (1, 1),
                   threshold: float | None = None) -> np.ndarray:
    """Boolean keep-mask of ``w`` (2-D, or N-D viewed as [shape[0], -1]).

    Zeroes the ``round(sparsity * n_blocks)`` blocks of smallest mean |w| (ties broken by
    position, so the result is deterministic), or, with ``threshold``, every block whose
    score is below it (used by global pruning).
    """
    w = np.asarray(w)
    w2 = w.reshape(w.shape[0], -1)
    scores = _block_scores(w2, block)
    if threshold is not None:
        keep_blocks = scores >= threshold
    else:
        n_drop = int(round(sparsity * scores.size))
        keep_blocks = np.ones(scores.size, dtype=bool)
        keep_blocks[np.argsort(scores, axis=None, kind="stable")[:n_drop]] = False
        keep_blocks = keep_blocks.reshape(scores.shape)
    return _expand(keep_blocks, block, w2.shape).reshape(w.shape)


def _global_threshold(weights: list[np.ndarray], options: PruneOptions) -> float:
    scores, sizes = [], []
    for w in weights:
        s = _block_scores(np.asarray(w).reshape(w.shape[0], -1), options.block).ravel()
        scores.append(s)
        sizes.append(np.full(s.shape, options.block[0] * options.block[1]))
    allscores, allsizes = np.concatenate(scores), np.concatenate(sizes)
    order = np.argsort(allscores, kind="stable")
    cum = np.cumsum(allsizes[order])
    idx = int(np.searchsorted(cum, options.sparsity * cum[-1]))
    if idx >= len(order):
        return float(np.inf)
    # Keep blocks with score >= the score of the first block we must keep.
    return float(np.nextafter(allscores[order[idx]], -np.inf)) if idx == 0 else \
        float(allscores[order[idx]])


def _frac_zero(a: np.ndarray) -> float:
    return 0.0 if a.size == 0 else 1.0 - np.count_nonzero(a) / a.size


def prune_module(module: Any, options: PruneOptions | None = None) -> list[PrunedLayer]:
    """Zero the smallest weights of ``module``'s selected layers in place (torch).

    Returns one :class:`PrunedLayer` per pruned layer. Biases are never pruned.
    """
    from .._lazy import require
    torch = require("torch", "pruning torch modules")
    options = options or PruneOptions()
    targets = [(name, mod) for name, mod in module.named_modules()
               if type(mod).__name__ in options.layer_types and getattr(mod, "weight", None) is not None
               and mod.weight.numel() >= options.min_elements and options.selects(name)]
    if not targets:
        raise InvalidInputError(f"No layer of types {list(options.layer_types)} with >= "
                                f"{options.min_elements} weights matched; nothing to prune.")
    arrays = [mod.weight.detach().cpu().numpy() for _, mod in targets]
    thr = _global_threshold(arrays, options) if options.scope == "global" else None
    report = []
    with torch.no_grad():
        for (name, mod), w in zip(targets, arrays):
            mask = magnitude_mask(w, options.sparsity, options.block, thr)
            before = _frac_zero(w)
            mod.weight.mul_(torch.from_numpy(mask.astype(w.dtype)).to(mod.weight.device))
            report.append(PrunedLayer(name, tuple(w.shape), before,
                                      _frac_zero(mod.weight.detach().cpu().numpy())))
    return report


def prune_onnx(model: onnx.ModelProto, options: PruneOptions | None = None
               ) -> tuple[onnx.ModelProto, list[PrunedLayer]]:
    """Prune the constant weights of the Gemm/MatMul nodes of an ONNX model (a copy).

    Blocks are laid out on ``W = [out_features, in_features]`` (a MatMul's ``B`` is W^T,
    a Gemm's ``B`` is W when transB=1), i.e. the orientation the sparse kernels compress.
    An initializer shared by several nodes is pruned once.
    """
    from ..sparse.report import linear_weights
    options = options or PruneOptions()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    seen: dict[str, tuple[np.ndarray, bool]] = {}
    for node, name, w in linear_weights(out):
        if name in seen or w.size < options.min_elements or not options.selects(name):
            continue
        transposed = not (node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute))
        seen[name] = (w, transposed)
    if not seen:
        raise InvalidInputError("No Gemm/MatMul constant weight matched; nothing to prune.")
    thr = _global_threshold([w for w, _ in seen.values()], options) if options.scope == "global" else None
    inits = {t.name: t for t in out.graph.initializer}
    report = []
    for name, (w, transposed) in seen.items():
        pruned = np.where(magnitude_mask(w, options.sparsity, options.block, thr), w, 0).astype(w.dtype)
        stored = pruned.T if transposed else pruned
        inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(stored), name))
        report.append(PrunedLayer(name, tuple(w.shape), _frac_zero(w), _frac_zero(pruned)))
    return out, report
