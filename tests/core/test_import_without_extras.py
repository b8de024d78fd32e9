"""`import trt_edge` (and every submodule) works with numpy + onnx alone.

A subprocess installs an import blocker for torch, onnxruntime, tensorrt,
pycuda, onnx-graphsurgeon, matplotlib and transformers, then imports every
module of the package. Modules whose whole purpose is a torch model
(``trt_edge.models.*``) may refuse, but only with MissingDependencyError
naming the extra to install.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

BLOCKED = ["torch", "onnxruntime", "tensorrt", "pycuda", "onnx_graphsurgeon", "matplotlib",
           "transformers", "onnxscript", "onnxruntime_extensions", "cuda", "tensorrt_lean"]

SCRIPT = textwrap.dedent("""
    import importlib, importlib.abc, json, pkgutil, sys
    BLOCKED = set(json.loads(sys.argv[1]))

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked for this test: {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    import trt_edge
    from trt_edge.errors import MissingDependencyError
    results = {}
    for info in pkgutil.walk_packages(trt_edge.__path__, "trt_edge."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
            results[info.name] = "ok"
        except MissingDependencyError as exc:
            results[info.name] = "missing: " + str(exc)
        except Exception as exc:
            results[info.name] = f"error: {type(exc).__name__}: {exc}"
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps({"results": results, "leaked": leaked}))
""")


def test_every_module_imports_without_heavy_extras():
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(BLOCKED)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    results = data["results"]
    assert results["trt_edge.errors"] == "ok" and len(results) > 20
    for name, status in results.items():
        if name.startswith("trt_edge.models."):
            assert status == "ok" or (status.startswith("missing: ") and "trt-edge[torch]" in status), \
                (name, status)
        else:
            assert status == "ok", (name, status)
    assert data["leaked"] == []


def test_require_names_the_extra():
    import pytest

    from trt_edge._lazy import require
    from trt_edge.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match=r"pip install 'trt-edge\[tensorrt\]'"):
        require("pycuda", "the TensorRT runtime")
