"""The TensorRT plugin sources: a SYNTAX-ONLY compile against a header shim (TensorRT itself is
not installable here). tests/sparse/trt_shim/NvInferRuntime.h is NOT TensorRT: it mirrors the
TensorRT 10 IPluginV3 declarations. This catches typos, signature drift against the mirrored
API and missing includes; it does not prove the plugin builds or runs against real TensorRT
(the `tensorrt` tier does that where TensorRT is installed)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIM = Path(__file__).resolve().parent / "trt_shim"
PLUGIN = REPO / "csrc" / "sparse" / "plugin" / "SparseLinearPlugin.cpp"


def _cuda_include() -> Path | None:
    nvcc = shutil.which("nvcc")
    for root in ([Path(nvcc).resolve().parent.parent] if nvcc else []) + [Path("/usr/local/cuda")]:
        if (root / "include" / "cuda_fp16.h").is_file():
            return root / "include"
    return None


@pytest.mark.skipif(shutil.which("c++") is None or _cuda_include() is None,
                    reason="needs a C++ compiler and the CUDA toolkit headers (cuda_fp16.h)")
def test_plugin_sources_pass_syntax_check_against_shim():
    proc = subprocess.run(["c++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
                           f"-I{SHIM}", f"-I{_cuda_include()}", str(PLUGIN)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_plugin_fields_match_the_spec(sparse_spec):
    """The creator's fields and the plugin name/version are those of the spec file (the ONNX
    node's attributes), so the parser's attribute -> field mapping lines up."""
    source = PLUGIN.read_text()
    header = PLUGIN.with_suffix(".h").read_text()
    for attr in sparse_spec["attributes"]:
        assert f'"{attr}"' in source, attr
    assert f'kSPARSE_LINEAR_NAME = "{sparse_spec["plugin"]["name"]}"' in header
    assert f'kSPARSE_LINEAR_VERSION = "{sparse_spec["plugin"]["version"]}"' in header
    assert len(sparse_spec["inputs"]) == 5 and "kNB_INPUTS = 5" in source


def test_pass_writes_the_spec_attributes(sparse_spec):
    from trt_edge.graph.passes import sparsify
    assert sparsify.OP_TYPE == sparse_spec["op_type"] and sparsify.DOMAIN == sparse_spec["domain"]
    src = Path(sparsify.__file__).read_text()
    for attr in sparse_spec["attributes"]:
        assert f'"{attr}"' in src, attr
    assert json.dumps(sparse_spec["cuda_block_shapes"]) == json.dumps(
        [list(b) for b in __import__("trt_edge.sparse.formats", fromlist=["x"]).BLOCK_SHAPES])
