"""Imports run one way: cli -> (serve, bench) -> (runtime, build, registry) -> (quant, graph, sparse,
compress, tflite) -> export -> (models, data) -> core.

Every ``import`` / ``from ... import`` in the package is read with ``ast`` - at
module level and inside functions alike ("not even lazily") - and resolved to
the trt_edge unit it names. A unit may import its own layer or lower ones;
units of one layer may use each other but not in a circle; and nothing but
``build`` and ``runtime`` imports tensorrt or pycuda. Packages not written yet
(serve, registry, compress, tflite...) are in the map already, so their imports
are checked the moment they exist.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "trt_edge"

# Higher number = higher layer. Core modules are units of their own.
LAYERS: dict[str, int] = {
    "cli": 7, "__main__": 7, "demo": 7,
    "serve": 6, "bench": 6,
    "runtime": 5, "build": 5, "registry": 5,
    "quant": 4, "graph": 4, "sparse": 4, "compress": 4, "tflite": 4,
    "export": 3,
    "models": 2, "data": 2,
    **{core: 1 for core in ("errors", "log", "artifacts", "sidecars", "numerics", "onnx_io", "ort_exec",
                            "_lazy", "_native_build", "__init__")},
}
GPU_MODULES = ("tensorrt", "tensorrt_lean", "pycuda")
GPU_UNITS = {"build", "runtime"}


def _unit(module: str) -> str | None:
    """``trt_edge.runtime.pool`` -> ``runtime``; None for modules outside trt_edge."""
    parts = module.split(".")
    if parts[0] != "trt_edge":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@functools.lru_cache(maxsize=None)
def _imports_of_file(path: Path) -> tuple[tuple[int, str], ...]:
    return tuple(_imports(path))


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            if node.module is None or (node.level and target in ("trt_edge",)):
                # `from . import x` / `from .. import cli`: the names are modules too
                out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return out


@functools.lru_cache(maxsize=None)
def _edges() -> tuple[tuple[str, str, str, int, str], ...]:
    """(importer unit, imported unit, file, line, module) for every trt_edge-internal import."""
    edges = []
    for path in sorted(PKG.rglob("*.py")):
        src_unit = _unit(_module_name(path)) if path.name != "__init__.py" or path.parent != PKG else "__init__"
        for line, mod in _imports_of_file(path):
            dst = _unit(mod)
            if dst is not None and dst != src_unit:
                edges.append((src_unit, dst, str(path.relative_to(PKG.parent)), line, mod))
    return tuple(edges)


def test_every_unit_has_a_layer():
    units = {_unit(_module_name(p)) for p in PKG.rglob("*.py")}
    missing = sorted(u for u in units if u not in LAYERS)
    assert not missing, f"add these to LAYERS (and to ARCHITECTURE.md): {missing}"


def test_imports_never_point_up():
    bad = [f"{f}:{line} ({src}, layer {LAYERS[src]}) imports {mod} ({dst}, layer {LAYERS[dst]})"
           for src, dst, f, line, mod in _edges()
           if src in LAYERS and dst in LAYERS and LAYERS[dst] > LAYERS[src]]
    assert not bad, "imports that point up the layers:\n  " + "\n  ".join(bad)


def test_no_circles_within_a_layer():
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    for src, dst, f, line, mod in _edges():
        if LAYERS.get(src) == LAYERS.get(dst) and LAYERS.get(src, 1) > 1:
            graph.setdefault(src, set()).add(dst)
            where.setdefault((src, dst), f"{f}:{line}")
    cycles = [(a, b) for a in graph for b in graph[a] if a in graph.get(b, set())]
    # longer cycles: a depth-first search over the (small) graph
    def reach(a: str, b: str, seen: set[str]) -> bool:
        return any(n == b or (n not in seen and reach(n, b, seen | {n})) for n in graph.get(a, ()))
    longer = [a for a in graph if reach(a, a, {a})]
    assert not cycles and not longer, (
        "same-layer packages import each other in a circle: "
        + ", ".join(f"{a}->{b} ({where[(a, b)]}) and {b}->{a} ({where[(b, a)]})" for a, b in cycles)
        + (f"; cycle through {sorted(set(longer))}" if longer else ""))


def test_build_never_imports_runtime():
    bad = [f"{f}:{line} imports {mod}" for src, dst, f, line, mod in _edges() if src == "build" and dst == "runtime"]
    assert not bad, bad


def test_only_build_and_runtime_import_tensorrt_or_pycuda():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        unit = _unit(_module_name(path))
        for line, mod in _imports_of_file(path):
            if mod.split(".")[0] in GPU_MODULES and unit not in GPU_UNITS:
                bad.append(f"{path.relative_to(PKG.parent)}:{line} imports {mod}")
    assert not bad, bad


@pytest.mark.parametrize("source, expected", [
    ("from ..runtime.onnxrt import run_onnx\n", "trt_edge.runtime.onnxrt"),
    ("from .. import runtime\n", "trt_edge.runtime"),
    ("def f():\n    import trt_edge.bench.latency\n", "trt_edge.bench.latency"),
])
def test_the_parser_sees_relative_and_function_level_imports(tmp_path, monkeypatch, source, expected):
    fake = PKG / "graph" / "_probe_for_test.py"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: source)
    assert expected in [m for _, m in _imports(fake)]
