"""2:4 semi-structured sparsity in the layout TensorRT's SPARSE_WEIGHTS flag accelerates.

TensorRT (TENSORRT.md) accelerates Conv/FC weights where every group of 4 consecutive values
along the input-channel (reduction) axis holds at most 2 non-zeros: for a torch/ONNX Conv
weight ``[K, C, R, S]`` the groups run along ``C`` for each ``(k, r, s)``; for a Linear weight
``[out, in]`` along ``in``. (A ``C`` that is not a multiple of 4 is zero-padded by TensorRT: the
last, short group must also hold at most 2 non-zeros.)

- :func:`mask_24` / :func:`prune_24`: keep the 2 largest |w| of every group (the masks
  ``torch.ao.pruning.WeightNormSparsifier(sparse_block_shape=(1, 4), zeros_per_block=2)`` makes
  for Linear, extended to convolutions in TensorRT's layout);
- :class:`MaskKeeper`: re-applies the masks after each optimizer step while fine-tuning;
- :func:`check_24_module` / :func:`check_24_onnx`: does each weight really qualify?
- :func:`sparse_flag_warning`: the message the engine builder logs when ``--sparse`` is asked
  for and no weight of the ONNX model qualifies.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from .._lazy import require
from ..errors import InvalidInputError


def _groups_view(w: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """``w`` ([K, C, ...] or [K, C]) as [K, spatial, groups, 4] with C zero-padded to a multiple of 4."""
    if w.ndim < 2:
        raise InvalidInputError(f"A 2:4 weight needs >= 2 dimensions, got shape {w.shape}.")
    k, c = w.shape[:2]
    moved = np.moveaxis(w.reshape(k, c, -1), 1, 2)  # [K, spatial, C]
    pad = (-c) % 4
    if pad:
        moved = np.concatenate([moved, np.zeros(moved.shape[:2] + (pad,), moved.dtype)], axis=2)
    return moved.reshape(k, moved.shape[1], -1, 4), (k, c) + tuple(w.shape[2:])


def is_24(w: np.ndarray) -> bool:
    """True when every group of 4 along the input-channel axis has at most 2 non-zeros."""
    groups, _ = _groups_view(np.asarray(w))
    return bool((np.count_nonzero(groups, axis=-1) <= 2).all())


def fraction_24(w: np.ndarray) -> float:
    """Fraction of the groups that satisfy 2:4."""
    groups, _ = _groups_view(np.asarray(w))
    ok = np.count_nonzero(groups, axis=-1) <= 2
    return float(ok.mean()) if ok.size else 1.0


def mask_24(w: np.ndarray) -> np.ndarray:
    """Boolean keep-mask of ``w``: the 2 largest |w| of every group of 4 input channels
    (ties broken by position)."""
    w = np.asarray(w)
    groups, shape = _groups_view(np.abs(w).astype(np.float64))
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, bool)
    np.put_along_axis(keep, order[..., :2], True, axis=-1)
    k, c = shape[:2]
    keep = keep.reshape(k, groups.shape[1], -1)[:, :, :c]  # [K, spatial, C]
    return np.moveaxis(keep, 2, 1).reshape(shape)


def _eligible(module: Any, min_in: int) -> bool:
    torch = require("torch")
    if isinstance(module, torch.nn.Linear):
        return module.in_features >= min_in
    if isinstance(module, torch.nn.Conv2d):
        return module.groups == 1 and module.in_channels >= min_in
    return False


@dataclasses.dataclass(frozen=True)
class Layer24:
    name: str
    shape: tuple[int, ...]
    is_24: bool
    fraction_24: float
    sparsity: float


def prune_24(model: Any, exclude: Sequence[str] = (), min_in_channels: int = 4) -> dict[str, np.ndarray]:
    """Zero all but the 2 largest of every 4 input-channel weights of each Linear and
    (non-grouped) Conv2d in place; returns the masks by module name (for :class:`MaskKeeper`).

    Depthwise/grouped convs and layers with fewer than ``min_in_channels`` inputs are skipped
    (TensorRT does not run them sparse)."""
    torch = require("torch", "2:4 pruning")
    masks = {}
    with torch.no_grad():
        for name, m in model.named_modules():
            if name in exclude or not _eligible(m, min_in_channels):
                continue
            mask = mask_24(m.weight.detach().cpu().numpy())
            m.weight.mul_(torch.from_numpy(mask.astype(np.float32)))
            masks[name] = mask
    if not masks:
        raise InvalidInputError("No Linear or non-grouped Conv2d with >= 4 input channels to make 2:4.")
    return masks


class MaskKeeper:
    """Re-applies fixed pruning masks: call it after each optimizer step (``after_step``)."""

    def __init__(self, model: Any, masks: dict[str, np.ndarray]):
        torch = require("torch")
        mods = dict(model.named_modules())
        self._pairs = [(mods[n].weight, torch.from_numpy(m.astype(np.float32))) for n, m in masks.items()]

    def __call__(self) -> None:
        torch = require("torch")
        with torch.no_grad():
            for w, m in self._pairs:
                w.mul_(m)


def check_24_module(model: Any) -> list[Layer24]:
    """2:4 status of every Linear/Conv2d weight of a torch model."""
    torch = require("torch")
    rows = []
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            w = m.weight.detach().cpu().numpy()
            rows.append(Layer24(name, tuple(w.shape), is_24(w) and w.shape[1] >= 4, fraction_24(w),
                                1.0 - np.count_nonzero(w) / w.size))
    return rows


def _onnx_weights(model: onnx.ModelProto) -> list[tuple[str, np.ndarray]]:
    """(node name, weight as [out, in, ...]) of every Conv/Gemm/MatMul with a constant weight, seen
    through a DequantizeLinear (the int8 values are what TensorRT checks)."""
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    out = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        src = node.input[1]
        if src in producer and producer[src].op_type == "DequantizeLinear":
            src = producer[src].input[0]
        if src not in inits:
            continue
        w = numpy_helper.to_array(inits[src])
        if w.ndim < 2:
            continue
        if node.op_type == "Conv":
            if next((a.i for a in node.attribute if a.name == "group"), 1) != 1:
                continue
        elif node.op_type == "Gemm":
            w = w if next((a.i for a in node.attribute if a.name == "transB"), 0) else w.T
        else:  # MatMul: B is [in, out]
            if w.ndim != 2:
                continue
            w = w.T
        out.append((node.name or src, w))
    return out


def check_24_onnx(model: onnx.ModelProto | str | os.PathLike[str], min_in_channels: int = 4) -> list[Layer24]:
    """2:4 status of every Conv/Gemm/MatMul constant weight of an ONNX model (FP32 or Q/DQ).

    A weight with fewer than ``min_in_channels`` input channels (e.g. a first conv on a gray
    image) is trivially "2:4" after padding and never accelerated: it is reported as not 2:4."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model))
    return [Layer24(name, tuple(w.shape), is_24(w) and w.shape[1] >= min_in_channels, fraction_24(w),
                    1.0 - np.count_nonzero(w) / w.size)
            for name, w in _onnx_weights(model)]


def sparse_flag_warning(model: onnx.ModelProto | str | os.PathLike[str]) -> str | None:
    """The warning for a build with SPARSE_WEIGHTS when no weight is 2:4 (None when some is).

    The engine builder calls this when ``--sparse`` / ``BuildOptions.sparse_weights`` is set."""
    rows = check_24_onnx(model)
    if any(r.is_24 for r in rows):
        return None
    best = max(rows, key=lambda r: r.fraction_24, default=None)
    detail = f" (best: {best.name}, {100 * best.fraction_24:.0f}% of its groups)" if best else ""
    return (f"--sparse was requested but none of the {len(rows)} Conv/Gemm/MatMul weights is 2:4 "
            f"sparse{detail}: TensorRT will pick dense kernels. Prune with "
            "trt_edge.compress.sparsity24.prune_24 (or `trt-edge compress --method sparse24`) and "
            "fine-tune first.")
