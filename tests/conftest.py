"""Shared fixtures and capability probes.

Tiers (TESTING.md): unmarked tests run everywhere (CI: 2 cores, no GPU);
``gpu`` needs an NVIDIA GPU + driver, ``tensorrt`` needs TensorRT, ``slow`` is
opt-in with ``--run-slow``. Each capability is probed once; a skipped test
says what is missing.
"""
from __future__ import annotations

import functools
import os
import shutil
import types
from pathlib import Path

import numpy as np
import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")


@functools.lru_cache(maxsize=None)
def has_gpu() -> str | None:
    """None if an NVIDIA GPU is usable, else the reason it is not."""
    if not (os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvhost-ctrl-gpu")):
        return "no NVIDIA GPU device node (/dev/nvidia0 or Jetson's /dev/nvhost-ctrl-gpu)"
    if shutil.which("nvidia-smi") is None and not os.path.exists("/etc/nv_tegra_release"):
        return "no NVIDIA driver tools (nvidia-smi) found"
    return None


@functools.lru_cache(maxsize=None)
def has_tensorrt() -> str | None:
    try:
        import tensorrt as trt  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"TensorRT is not installed ({exc})"
    if not hasattr(trt, "Builder"):
        # tensorrt-stubs alone make `import tensorrt` succeed as an empty namespace.
        return "only TensorRT type stubs are installed, not TensorRT"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--run-slow")
    gpu_reason, trt_reason = has_gpu(), has_tensorrt()
    # Markers, not item.keywords: keywords also hold parametrize ids, and an id such
    # as "tensorrt" must not skip a CPU test.
    for item in items:
        if item.get_closest_marker("slow") and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow test: run with --run-slow"))
        if item.get_closest_marker("gpu") and gpu_reason:
            item.add_marker(pytest.mark.skip(reason=f"gpu tier: {gpu_reason}"))
        if item.get_closest_marker("tensorrt") and trt_reason:
            item.add_marker(pytest.mark.skip(reason=f"tensorrt tier: {trt_reason}"))


# ---- real models and data (DATA.md), built once per session ------------------------------

@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def mnist_split():
    from trt_edge.data.mnist import load_mnist
    return load_mnist()


@pytest.fixture(scope="session")
def mnist_model(mnist_split):
    pytest.importorskip("torch")
    from trt_edge.models.mnist import train_mnist_cnn
    return train_mnist_cnn(mnist_split, epochs=2, seed=0)


@pytest.fixture(scope="session")
def mnist_onnx(mnist_model, mnist_split, artifacts_dir) -> Path:
    import torch
    from trt_edge.export import ExportOptions, export_onnx
    res = export_onnx(mnist_model, torch.from_numpy(mnist_split.x_test[:2]), artifacts_dir / "mnist.onnx",
                      ExportOptions(input_names=["input"], output_names=["logits"], exporter="torchscript"))
    return res.path


@pytest.fixture(scope="session")
def minilm_bundle():
    pytest.importorskip("transformers")
    from trt_edge.models.minilm import load_minilm
    return load_minilm()


MINILM_AXES = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
               "embeddings": {0: "batch"}}


def export_minilm(bundle, path: Path, exporter: str) -> Path:
    import torch
    from trt_edge.export import ExportOptions, export_onnx
    feed = bundle.tokenize(["A robot arm picks up the red cube.", "Sensors report a blocked path ahead now."])
    args = tuple(torch.from_numpy(feed[k]) for k in ("input_ids", "attention_mask"))
    return export_onnx(bundle.module, args, path, ExportOptions(
        exporter=exporter, input_names=["input_ids", "attention_mask"], output_names=["embeddings"],
        dynamic_axes=MINILM_AXES)).path


@pytest.fixture(scope="session")
def minilm_onnx(minilm_bundle, artifacts_dir) -> Path:
    """MiniLM exported with the TorchScript exporter (fast); see minilm_dynamo_onnx for the other."""
    return export_minilm(minilm_bundle, artifacts_dir / "minilm.onnx", "torchscript")


@pytest.fixture(scope="session")
def minilm_dynamo_onnx(minilm_bundle, artifacts_dir) -> Path:
    return export_minilm(minilm_bundle, artifacts_dir / "minilm_dynamo.onnx", "dynamo")


@pytest.fixture(scope="session")
def mobilenet_model():
    pytest.importorskip("torch")
    from trt_edge.models.mobilenetv2 import mobilenet_v2_imagenet
    return mobilenet_v2_imagenet()


@pytest.fixture(scope="session")
def imagenet_photos() -> np.ndarray:
    from trt_edge.data.images import imagenet_photos as load
    return load()[0]


@pytest.fixture(scope="session")
def mobilenet_onnx(mobilenet_model, imagenet_photos, artifacts_dir) -> Path:
    import torch
    from trt_edge.export import ExportOptions, export_onnx
    return export_onnx(mobilenet_model, torch.from_numpy(imagenet_photos[:2]), artifacts_dir / "mobilenet_v2.onnx",
                       ExportOptions(input_names=["input"], output_names=["logits"],
                                     exporter="torchscript")).path


@pytest.fixture
def rng() -> np.random.Generator:
    """Fresh random inputs each run (TESTING.md); the seed is printed on failure via the name."""
    seed = int.from_bytes(os.urandom(4), "little")
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def ns():
    return types.SimpleNamespace
