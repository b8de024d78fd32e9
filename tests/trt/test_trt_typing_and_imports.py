"""The TensorRT layer imports without TensorRT/pycuda, and mypy checks it against the real stubs."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install_trt_stubs.py"
OUR_MODULES = ["trt_edge.build", "trt_edge.build.builder", "trt_edge.build.fallback",
               "trt_edge.build.metadata", "trt_edge.build.profiles", "trt_edge.build.precision",
               "trt_edge.build.timing_cache", "trt_edge.build.versions", "trt_edge.build.options",
               "trt_edge.build.cuda", "trt_edge.build.engine_cache",
               "trt_edge.runtime.tensorrt", "trt_edge.runtime.trt_instance", "trt_edge.runtime.cuda",
               "trt_edge.runtime.cuda_plan", "trt_edge.runtime.cuda_graph", "trt_edge.runtime.pool",
               "trt_edge.runtime.model", "trt_edge.bench.trt_timing",
               "trt_edge.bench.tegrastats", "trt_edge.cli.build"]
OUR_FILES = ["trt_edge/build/__init__.py", "trt_edge/build/builder.py", "trt_edge/build/fallback.py",
             "trt_edge/build/metadata.py", "trt_edge/build/profiles.py", "trt_edge/build/precision.py",
             "trt_edge/build/timing_cache.py", "trt_edge/build/versions.py", "trt_edge/build/options.py",
             "trt_edge/build/cuda.py", "trt_edge/build/engine_cache.py",
             "trt_edge/runtime/tensorrt.py", "trt_edge/runtime/trt_instance.py", "trt_edge/runtime/cuda.py",
             "trt_edge/runtime/cuda_plan.py", "trt_edge/runtime/cuda_graph.py", "trt_edge/runtime/pool.py",
             "trt_edge/runtime/model.py", "trt_edge/runtime/signature.py", "trt_edge/runtime/identity.py",
             "trt_edge/runtime/timing.py", "trt_edge/bench/trt_timing.py",
             "trt_edge/bench/tegrastats.py", "trt_edge/cli/build.py"]


def test_layer_imports_with_heavy_modules_blocked():
    # A None entry in sys.modules makes `import X` raise ImportError: no tensorrt,
    # pycuda, torch or onnxruntime, as on a bare Jetson image or CI.
    code = ("import sys\n"
            "for m in ('tensorrt','tensorrt_lean','pycuda','pycuda.driver','torch','onnxruntime',"
            "'onnx_graphsurgeon'):\n"
            "    sys.modules[m] = None\n"
            f"import importlib\nfor m in {OUR_MODULES!r}:\n    importlib.import_module(m)\n"
            "from trt_edge.build import tensorrt_available, tensorrt_version, load_tensorrt\n"
            "assert not tensorrt_available() and tensorrt_version() is None\n"
            "try:\n    load_tensorrt()\nexcept ImportError as e:\n    print('HINT', e)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "HINT TensorRT ('tensorrt') is not installed" in res.stdout and "pip install" in res.stdout


def test_stub_only_namespace_package_is_not_tensorrt(tmp_path):
    # What unpatched tensorrt-stubs leave behind: `import tensorrt` succeeds, empty.
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.pyi").write_text("class Builder: ...\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "import tensorrt\n"  # succeeds as a namespace package
            "from trt_edge.build import tensorrt_available\n"
            "print('AVAILABLE', tensorrt_available())\n")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "AVAILABLE False" in res.stdout


def _load_script():
    spec = importlib.util.spec_from_file_location("install_trt_stubs", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stub_patches_fix_the_three_faults_and_are_idempotent():
    s = _load_script()
    raw = ("from __future__ import annotations\n"
           "import tensorrt_libs as tensorrt_libs\n"
           "class IPluginV3:\n"
           "    def configure_plugin(self: IPluginV3, in: list[int], out: list[int]) -> None:\n"
           "        \"\"\"\n            :arg in: The input tensors.\n        \"\"\"\n"
           "    def add_scale_nd(self, input: int, mode: int, shift: Weights = None, scale: Weights = None, "
           "power: Weights = None, channel_axis: int) -> int:\n        ...\n")
    fixed = s.patch_stub_text(raw)
    assert "in_: list[int]" in fixed and ":arg in: The input" in fixed  # docstrings untouched
    assert "channel_axis: int = ...)" in fixed
    assert "import tensorrt_libs" not in fixed and "tensorrt_libs: _Any" in fixed
    assert s.patch_stub_text(fixed) == fixed
    compile(fixed, "<stub>", "exec")  # valid syntax now (the raw text is not)
    with pytest.raises(SyntaxError):
        compile(raw, "<stub>", "exec")


def test_install_script_on_a_scratch_site_packages(tmp_path):
    site = tmp_path / "site"
    (site / "tensorrt").mkdir(parents=True)
    (site / "tensorrt" / "__init__.pyi").write_text("import tensorrt_libs as tensorrt_libs\n__version__: str\n")
    (site / "tensorrt_bindings").mkdir()
    (site / "tensorrt_bindings" / "tensorrt.pyi").write_text("def f(self, in: int) -> None: ...\n")
    (site / "tensorrt_bindings" / "__init__.pyi").write_text("")
    real = tmp_path / "real"  # a real install (has a .py / .so) must never be removed
    (real / "tensorrt").mkdir(parents=True)
    (real / "tensorrt" / "__init__.py").write_text("")
    run = lambda *a: subprocess.run([sys.executable, str(SCRIPT), *a], capture_output=True, text=True,  # noqa: E731
                                    timeout=60)
    r1 = run("--site-packages", str(site))
    assert r1.returncode == 0, r1.stderr
    assert (site / "tensorrt-stubs" / "__init__.pyi").exists()
    assert "in_: int" in (site / "tensorrt_bindings-stubs" / "tensorrt.pyi").read_text()
    assert not (site / "tensorrt").exists() and not (site / "tensorrt_bindings").exists()
    before = {p: p.read_text() for p in site.rglob("*.pyi")}
    r2 = run("--site-packages", str(site))
    assert r2.returncode == 0 and "nothing to do" in r2.stdout
    assert {p: p.read_text() for p in site.rglob("*.pyi")} == before
    r3 = run("--site-packages", str(real))
    assert (real / "tensorrt" / "__init__.py").exists() and "real tensorrt install" in r3.stdout


def _stubs_installed() -> bool:
    return (Path(sysconfig.get_paths()["purelib"]) / "tensorrt-stubs" / "__init__.pyi").exists()


@pytest.mark.skipif(shutil.which("mypy") is None and importlib.util.find_spec("mypy") is None,
                    reason="mypy not installed (pip install 'trt-edge[dev]')")
@pytest.mark.skipif(not _stubs_installed(), reason="patched tensorrt stubs not installed: run "
                    "`pip install --no-deps tensorrt-stubs && python scripts/install_trt_stubs.py`")
def test_mypy_checks_our_tensorrt_calls_for_real(tmp_path):
    # 1. the stubs are live: a misspelt IBuilderConfig method is an error
    probe = tmp_path / "probe.py"
    probe.write_text("import tensorrt as trt\n"
                     "def f(b: trt.Builder) -> None:\n"
                     "    b.create_builder_config().set_memroy_pool_limit(trt.MemoryPoolType.WORKSPACE, 1)\n")
    cmd = [sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent",
           "--config-file", str(ROOT / "pyproject.toml")]
    r = subprocess.run(cmd + [str(probe)], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert r.returncode == 1 and "set_memroy_pool_limit" in r.stdout, r.stdout + r.stderr
    # 2. our layer type-checks against them
    r = subprocess.run(cmd + OUR_FILES, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
