"""What an optimisation did: op counts before/after, per-pass time, node delta and stats."""
from __future__ import annotations

import collections
import dataclasses
from typing import Any

import onnx

from ..artifacts import to_jsonable
from ..onnx_io import iter_nodes


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type (``domain::Op`` outside the default domain), nested graphs included."""
    counts: collections.Counter[str] = collections.Counter()
    for node in iter_nodes(model.graph):
        domain = node.domain if node.domain not in ("", "ai.onnx") else ""
        counts[f"{domain}::{node.op_type}" if domain else node.op_type] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def initializer_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) if t.HasField("raw_data") else t.ByteSize() for t in model.graph.initializer)


@dataclasses.dataclass
class PassRecord:
    """One run of one pass."""

    name: str
    round: int
    seconds: float             # the pass itself
    check_seconds: float       # checker + shape inference + numerical verification after it
    nodes_before: int
    nodes_after: int
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_abs_error: float | None = None  # vs the original model, over all verification feeds
    tolerance: dict[str, float] | None = None  # what it was verified against (None: not verified)

    @property
    def node_delta(self) -> int:
        return self.nodes_after - self.nodes_before


@dataclasses.dataclass
class OptimizationReport:
    """Summary of :func:`trt_edge.graph.optimize`; ``to_dict`` is what the sidecar stores."""

    source: str | None
    passes: list[PassRecord]
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    initializer_bytes_before: int
    initializer_bytes_after: int
    total_seconds: float
    checks: list[str]                  # which structural checks ran after each pass
    verified: bool                     # numerics checked after every pass
    verification_feeds: int = 0
    tolerance: dict[str, float] | None = None  # the loosest any pass needed (see GraphPass.tolerance)
    max_abs_error: float | None = None  # final model vs original
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def nodes_before(self) -> int:
        return sum(self.ops_before.values())

    @property
    def nodes_after(self) -> int:
        return sum(self.ops_after.values())

    def op_deltas(self) -> dict[str, tuple[int, int]]:
        ops = sorted(set(self.ops_before) | set(self.ops_after),
                     key=lambda o: (-(self.ops_before.get(o, 0)), o))
        return {o: (self.ops_before.get(o, 0), self.ops_after.get(o, 0)) for o in ops}

    def table(self) -> str:
        lines = [f"nodes {self.nodes_before} -> {self.nodes_after}, initializers "
                 f"{self.initializer_bytes_before / 1e6:.2f} MB -> {self.initializer_bytes_after / 1e6:.2f} MB, "
                 f"{self.total_seconds:.2f} s"]
        if self.verified and self.tolerance:
            err = "-" if self.max_abs_error is None else f"{self.max_abs_error:.3e}"
            lines.append(f"verified after every pass on {self.verification_feeds} feed(s) in ONNX Runtime "
                         f"(rtol {self.tolerance['rtol']:g}, atol {self.tolerance['atol']:g}); "
                         f"final max abs error vs original {err}")
        else:
            lines.append("numerics NOT verified (--no-verify)")
        lines.append("")
        lines.append(f"{'pass':<22}{'round':>6}{'time_s':>9}{'check_s':>9}{'nodes':>13}{'delta':>7}"
                     f"{'max_abs':>11}  stats")
        for p in self.passes:
            err = "-" if p.max_abs_error is None else f"{p.max_abs_error:.2e}"
            stats = ", ".join(f"{k}={v}" for k, v in p.stats.items() if v)
            lines.append(f"{p.name:<22}{p.round:>6}{p.seconds:>9.3f}{p.check_seconds:>9.3f}"
                         f"{p.nodes_before:>6}->{p.nodes_after:<6}{p.node_delta:>7}{err:>11}  {stats}")
        lines.append("")
        lines.append(f"{'op':<28}{'before':>8}{'after':>8}")
        for op, (b, a) in self.op_deltas().items():
            mark = "" if a == b else ("  -" if a < b else "  +")
            lines.append(f"{op[:27]:<28}{b:>8}{a:>8}{mark}")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = to_jsonable(self)
        d["nodes_before"] = self.nodes_before
        d["nodes_after"] = self.nodes_after
        return d
