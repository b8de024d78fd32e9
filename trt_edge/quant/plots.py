"""Plots for precision work (matplotlib, imported lazily; files written atomically)."""
from __future__ import annotations

import os
from pathlib import Path

from .._lazy import require
from ..artifacts import atomic_path
from .sensitivity import SensitivityReport


def plot_sensitivity(report: SensitivityReport, path: str | os.PathLike[str], top: int = 60) -> Path:
    """Bar chart of per-layer SQNR (worst first, at most ``top`` layers) with the all-INT8 line."""
    matplotlib = require("matplotlib", "plots")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", "plots")
    layers = sorted(report.layers, key=lambda l: l.sqnr_db)[:top]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(layers) + 2), 4.5))
    ax.bar(range(len(layers)), [l.sqnr_db for l in layers], color="tab:blue")
    ax.axhline(report.all_int8_sqnr_db, color="tab:red", linestyle="--",
               label=f"all layers INT8: {report.all_int8_sqnr_db:.1f} dB")
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([l.node[-28:] for l in layers], rotation=90, fontsize=6)
    ax.set_ylabel("output SQNR with only this layer INT8 (dB)")
    ax.set_title("INT8 sensitivity per layer (lower = more sensitive)")
    ax.legend()
    fig.tight_layout()
    dest = Path(path)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format=dest.suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
    return dest
