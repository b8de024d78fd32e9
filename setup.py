"""trt-edge packaging.

Metadata lives here (the project promises a setup.py: it also builds the
native sparse kernels in csrc/ where a compiler is present).
"""
from __future__ import annotations

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _version() -> str:
    for line in (HERE / "trt_edge" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip('"')
    raise RuntimeError("no __version__")


TORCH = "torch==2.13.0"  # the CPU build on the project machines; Jetson users install NVIDIA's wheel

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
        "serve": ["fastapi>=0.110", "uvicorn>=0.29", "prometheus-client>=0.20"],
        "sparse": ["onnxruntime-extensions>=0.12"],
        "dev": [
            "pytest>=8", "mypy>=1.10", "onnxslim>=0.1.50", "scipy",
            "transformers>=4.40", "tokenizers", "safetensors", "mlxtend>=0.23",
            "scikit-learn", "scikit-image", "gensim",
        ],
    },
    entry_points={"console_scripts": ["trt-edge=trt_edge.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Operating System :: POSIX :: Linux",
    ],
    license="Apache-2.0",
)
