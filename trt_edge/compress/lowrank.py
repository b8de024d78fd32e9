"""Low-rank factorisation by truncated SVD: each layer becomes two smaller ones.

- ``Linear(in, out)`` -> ``Linear(in, r, bias=False)`` then ``Linear(r, out)``: ``W ~ U_r S_r V_r^T``
  with ``sqrt(S)`` split between the two factors;
- ``Conv2d(C, K, k x k)`` -> ``Conv2d(C, r, k x k, bias=False)`` then ``Conv2d(r, K, 1 x 1)``: the
  SVD of the weight reshaped to ``[K, C*k*k]`` (the "channel" decomposition of Jaderberg et al.;
  grouped convs are left alone).

The rank is the smallest that keeps ``energy`` of the squared singular values, or the largest
whose two factors fit ``param_budget`` of the layer's parameters; a layer is replaced only when
the factorised form has fewer parameters. The report gives, per layer, the relative Frobenius
reconstruction error ``||W - W_r|| / ||W||`` before any fine-tuning.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import numpy as np

from .._lazy import require
from ..errors import InvalidInputError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LowRankOptions:
    """Exactly one of ``energy`` (fraction of sum(S^2) kept, e.g. 0.9) or ``param_budget``
    (fraction of each layer's weight parameters the two factors may use, e.g. 0.5).
    ``include``: module names to factorise (empty: every Linear/Conv2d but the last layer).
    ``min_rank``: never go below this rank."""

    energy: float | None = 0.9
    param_budget: float | None = None
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    min_rank: int = 1

    def __post_init__(self) -> None:
        if (self.energy is None) == (self.param_budget is None):
            raise InvalidInputError("give exactly one of energy= or param_budget=.")
        if self.energy is not None and not 0.0 < self.energy <= 1.0:
            raise InvalidInputError(f"energy must be in (0, 1], got {self.energy}.")
        if self.param_budget is not None and not 0.0 < self.param_budget < 1.0:
            raise InvalidInputError(f"param_budget must be in (0, 1), got {self.param_budget}.")


@dataclasses.dataclass(frozen=True)
class LowRankLayer:
    name: str
    kind: str
    shape: tuple[int, ...]
    rank: int
    full_rank: int
    params_before: int
    params_after: int
    relative_error: float  # ||W - W_r||_F / ||W||_F, before fine-tuning
    replaced: bool


def choose_rank(s: np.ndarray, rows: int, cols: int, options: LowRankOptions) -> int:
    """Rank for singular values ``s`` of a ``rows x cols`` matrix under ``options``."""
    full = len(s)
    if options.energy is not None:
        cum = np.cumsum(s.astype(np.float64) ** 2)
        r = int(np.searchsorted(cum, options.energy * cum[-1] * (1 - 1e-12)) + 1)
    else:
        assert options.param_budget is not None  # __post_init__: exactly one is set
        r = int(options.param_budget * rows * cols // (rows + cols))
    return int(min(max(r, options.min_rank), full))


def _factor(w2: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, float]:
    u, s, vt = np.linalg.svd(w2.astype(np.float64), full_matrices=False)
    root = np.sqrt(s[:rank])
    a = (u[:, :rank] * root).astype(np.float32)          # [rows, r]
    b = (root[:, None] * vt[:rank]).astype(np.float32)   # [r, cols]
    err = float(np.linalg.norm(w2 - a.astype(np.float64) @ b) / max(np.linalg.norm(w2), 1e-30))
    return a, b, err


def _replace(root: Any, name: str, new: Any) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def factorize(model: Any, options: LowRankOptions = LowRankOptions(),
              last_layer: str | None = None) -> list[LowRankLayer]:
    """Replace the selected Linear/Conv2d layers of ``model`` in place by their truncated SVD.

    ``last_layer``: the output layer's name, left alone unless named in ``include`` (default:
    the last Linear/Conv2d in module order)."""
    torch = require("torch", "low-rank factorisation")
    nn = torch.nn
    candidates = [(n, m) for n, m in model.named_modules()
                  if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)]
    if not candidates:
        raise InvalidInputError("The model has no Linear or Conv2d layer to factorise.")
    last = last_layer if last_layer is not None else candidates[-1][0]
    report = []
    for name, m in candidates:
        if options.include and name not in options.include:
            continue
        if not options.include and name == last or name in options.exclude:
            continue
        w = m.weight.detach().cpu().numpy()
        w2 = w.reshape(w.shape[0], -1)
        rows, cols = w2.shape
        s = np.linalg.svd(w2.astype(np.float64), compute_uv=False)
        rank = choose_rank(s, rows, cols, options)
        a, b, err = _factor(w2, rank)
        after = rank * (rows + cols)
        replaced = after < rows * cols
        if replaced:
            bias = m.bias.detach().clone() if m.bias is not None else None
            if isinstance(m, nn.Linear):
                first, second = nn.Linear(cols, rank, bias=False), nn.Linear(rank, rows, bias=bias is not None)
                first.weight.data = torch.from_numpy(b)
                second.weight.data = torch.from_numpy(a)
            else:
                first = nn.Conv2d(m.in_channels, rank, m.kernel_size, m.stride, m.padding, m.dilation,
                                  bias=False, padding_mode=m.padding_mode)
                second = nn.Conv2d(rank, m.out_channels, 1, bias=bias is not None)
                first.weight.data = torch.from_numpy(b.reshape(rank, *w.shape[1:]))
                second.weight.data = torch.from_numpy(a.reshape(rows, rank, 1, 1))
            if bias is not None:
                second.bias.data = bias
            _replace(model, name, nn.Sequential(first, second))
        report.append(LowRankLayer(name, type(m).__name__, tuple(w.shape), rank, len(s), rows * cols,
                                   after if replaced else rows * cols, err, replaced))
        log.info("low-rank %s %s: rank %d/%d, rel. error %.4f%s", name, tuple(w.shape), rank, len(s), err,
                 "" if replaced else " (kept: not smaller)")
    return report
