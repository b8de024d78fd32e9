"""trt-edge packaging.

Metadata lives here (the project promises a setup.py: it also builds the
native sparse kernels in csrc/ where a compiler is present).
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent


def _version() -> str:
    for line in (HERE / "trt_edge" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip('"')
    raise RuntimeError("no __version__")


TORCH = "torch==2.13.0"  # the CPU build on the project machines; Jetson users install NVIDIA's wheel


# --- native sparse CPU library (csrc/sparse) ---------------------------------------------
# Built as a plain shared library (loaded with ctypes, no Python ABI) into
# trt_edge/sparse/_lib/. The compile logic lives in trt_edge/sparse/build.py (stdlib only,
# loaded by path: the package's own dependencies are not importable at build time). It tries
# -march=native first and falls back to portable flags; if no flag set
# compiles (no C++ compiler at all), the install still succeeds and the sparse CPU kernel
# raises MissingDependencyError saying how to build it (`python -m trt_edge.sparse.build`).
_SPARSE_EXT = "trt_edge.sparse._lib.libtrt_edge_sparse"
# The calibration histogram kernel (csrc/calib), same rules: optional, never fails the install
# (calibration then bins in NumPy: same results, slower).
_CALIB_EXT = "trt_edge.quant._lib.libtrt_edge_calib"
_NATIVE_EXTS = {_SPARSE_EXT, _CALIB_EXT}


def _sparse_build_module():
    spec = importlib.util.spec_from_file_location("_trt_edge_sparse_build",
                                                  HERE / "trt_edge" / "sparse" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class BuildNative(build_ext):
    """build_ext that builds the native CPU libraries (sparse kernels, calibration kernel) and never
    fails the install."""

    def get_ext_filename(self, fullname: str) -> str:
        parts = fullname.split(".")
        if parts[-1] in {e.rsplit(".", 1)[-1] for e in _NATIVE_EXTS}:
            return str(Path(*parts[:-1], parts[-1] + ".so"))  # not an importable module name
        return super().get_ext_filename(fullname)

    def build_extension(self, ext: Extension) -> None:
        if ext.name not in _NATIVE_EXTS:
            return super().build_extension(ext)
        out = Path(self.get_ext_fullpath(ext.name))
        build = _sparse_build_module()
        log = logging.getLogger("trt_edge.setup")
        if ext.name == _CALIB_EXT:
            try:
                path, label = build.compile_shared_library(HERE / "csrc" / "calib" / "abs_histogram.cpp", out,
                                                           what="calibration kernel")
                log.info("built %s (%s)", path, label)
            except Exception as exc:  # noqa: BLE001 - optional native part: warn, never fail
                log.warning("trt-edge: the calibration kernel was not built (%s); calibration uses NumPy "
                            "(same results, slower). Build it later with `python -m trt_edge.quant.native`.",
                            str(exc).splitlines()[0])
            return None
        try:
            path, label = build.compile_cpu_library(out, source_dir=HERE / "csrc" / "sparse")
            log.info("built %s (%s)", path, label)
        except Exception as exc:  # noqa: BLE001 - optional native part: warn, never fail
            log.warning("trt-edge: the sparse CPU library was not built (%s). trt_edge works without "
                        "it; build it later with `python -m trt_edge.sparse.build`.",
                        str(exc).splitlines()[0])
        # The CUDA kernels (for the GPU tests/benchmark) only on request: nvcc for five sm
        # targets takes 15-60 s, and CI has no GPU to run them on.
        if os.environ.get("TRT_EDGE_BUILD_CUDA") == "1":
            try:
                cuda = build.compile_cuda_library(out.parent / build.CUDA_LIB_NAME)
                log.info("built %s", cuda)
            except Exception as exc:  # noqa: BLE001
                log.warning("trt-edge: CUDA sparse kernels not built: %s", str(exc).splitlines()[0])


setup(
    name="trt-edge",
    version=_version(),
    description="PyTorch -> ONNX -> optimized INT8/FP16 TensorRT engines for NVIDIA GPUs and Jetson, "
                "with ONNX Runtime as the embedded CPU backend",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["trt_edge", "trt_edge.*"]),
    include_package_data=True,
    # import trt_edge needs numpy + onnx only; onnxruntime and onnx-graphsurgeon are
    # imported lazily but are part of a normal install (ORT is the default backend).
    install_requires=[
        "numpy>=1.23",
        "onnx>=1.16",
        "onnxruntime>=1.18",
        "onnx-graphsurgeon>=0.5",
        "rich>=13",
        "matplotlib>=3.7",
    ],
    extras_require={
        "torch": [TORCH, "onnxscript>=0.2"],
        "tensorrt": ["tensorrt>=10.3", "pycuda>=2024.1"],
        "models": ["transformers>=4.40", "tokenizers", "safetensors"],
        # One extra per feature area (each line owned by that area; setup_env.sh installs them all).
        # serve: Starlette (via FastAPI) + uvicorn with its C HTTP parser and event loop, prometheus-client.
        "serve": ["fastapi>=0.110", "uvicorn>=0.29", "httptools>=0.6", "uvloop>=0.19; sys_platform != 'win32'",
                  "prometheus-client>=0.20"],
        "registry": ["model-signing>=1.1", "pyOpenSSL", "cryptography>=42"],
        "tflite": ["tflite>=2.18", "ai-edge-litert>=2.3", "flatbuffers>=24"],  # importer + LiteRT runner
        "compress": ["torch-pruning>=1.5,<1.7"],  # dependency-graph structured pruning (tested: 1.6.1)
        "sparse": ["onnxruntime-extensions>=0.12"],
        "dev": [
            "pytest>=8", "mypy>=1.10", "onnxslim>=0.1.50", "scipy",
            "transformers>=4.40", "tokenizers", "safetensors", "mlxtend>=0.23",
            "scikit-learn", "scikit-image", "gensim",
            "skl2onnx>=1.16", "onnxsim",  # graph tests (another exporter) and bench_passes baselines
        ],
    },
    entry_points={"console_scripts": ["trt-edge=trt_edge.cli:main"]},
    ext_modules=[Extension(_SPARSE_EXT, sources=["csrc/sparse/sparse_linear_cpu.cpp"], optional=True,
                           depends=["csrc/sparse/sparse_linear_cpu.h", "csrc/sparse/sparse_linear_cpu_kernels.inc"]),
                 Extension(_CALIB_EXT, sources=["csrc/calib/abs_histogram.cpp"], optional=True)],
    cmdclass={"build_ext": BuildNative},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
    ],
    license="Apache-2.0",
)
