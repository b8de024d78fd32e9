"""The graph-pass registry.

A pass is a named function ``(graph, ctx) -> graph`` on an onnx-graphsurgeon
``gs.Graph``. It may edit the graph in place and return it, or return a new
graph. Its docstring says what it guarantees. Passes are registered with
:func:`register_pass` and looked up by name, so pipelines, the CLI
(``trt-edge optimize --passes a,b``) and later features (quantization,
sparsification) share one mechanism.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Protocol

from ..errors import InvalidInputError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PassContext:
    """What a pass may know besides the graph.

    ``opset``: the default-domain opset of the model being rewritten.
    ``options``: pass-specific options, keyed by pass name (e.g.
    ``{"sparsify": {"threshold": 0.8}}``).
    ``stats``: a pass records what it did here (``ctx.record("fold_bn", folded=3)``);
    the pipeline copies it into the report.
    ``protected``: tensor names a pass must not remove or rename (graph outputs
    are always protected).
    ``shapes_inferred``: the graph was imported from a model whose value_info
    came from ONNX shape inference (the pipeline does this), so a pass may
    trust the tensors' shapes without running inference again.
    """

    opset: int = 17
    options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    protected: set[str] = dataclasses.field(default_factory=set)
    shapes_inferred: bool = False

    def option(self, pass_name: str, key: str, default: Any = None) -> Any:
        return self.options.get(pass_name, {}).get(key, default)

    def record(self, pass_name: str, **counts: Any) -> None:
        entry = self.stats.setdefault(pass_name, {})
        for k, v in counts.items():
            entry[k] = entry.get(k, 0) + v if isinstance(v, (int, float)) and not isinstance(v, bool) \
                else v


class PassFn(Protocol):
    def __call__(self, graph: Any, ctx: PassContext) -> Any: ...


@dataclasses.dataclass(frozen=True)
class GraphPass:
    name: str
    fn: Callable[[Any, PassContext], Any]
    description: str
    default: bool  # part of the default optimize pipeline
    order: int     # position in the default pipeline (lower runs first)
    # A pass that legitimately changes float rounding (e.g. folding BN scales into conv
    # weights) declares the looser FP32 tolerance its output needs (a numerics.Tolerance);
    # None: the pipeline's tolerance (rtol 1e-5 / atol 1e-6 by default) applies.
    tolerance: Any = None

    def __call__(self, graph: Any, ctx: PassContext) -> Any:
        return self.fn(graph, ctx)


_REGISTRY: dict[str, GraphPass] = {}


def register_pass(name: str, *, default: bool = True, order: int = 100, tolerance: Any = None
                  ) -> Callable[[Callable[[Any, PassContext], Any]], Callable[[Any, PassContext], Any]]:
    """Decorator registering ``fn`` as pass ``name`` (``tolerance``: see :class:`GraphPass`)."""

    def deco(fn: Callable[[Any, PassContext], Any]) -> Callable[[Any, PassContext], Any]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"graph pass '{name}' is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = GraphPass(name, fn, doc[0] if doc else "", default, order, tolerance)
        return fn

    return deco


def _ensure_builtin_passes_loaded() -> None:
    # Importing the passes package registers the built-in passes.
    from . import passes  # noqa: F401


def get_pass(name: str) -> GraphPass:
    _ensure_builtin_passes_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidInputError(f"Unknown graph pass '{name}'. Available: {', '.join(sorted(_REGISTRY))}."
                                ) from None


def list_passes() -> list[GraphPass]:
    _ensure_builtin_passes_loaded()
    return sorted(_REGISTRY.values(), key=lambda p: (p.order, p.name))


def default_pipeline() -> list[str]:
    return [p.name for p in list_passes() if p.default]
