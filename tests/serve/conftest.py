"""Fixtures of the inference-service tests: a Triton-layout repository and a live server.

The MNIST CNN here is randomly initialised (protocol tests need a real graph, not a trained one);
two versions differ in their weights. MiniLM (real weights, INT64 inputs) comes from the root
conftest's session export.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("tritonclient.http")


def export_cnn(path: Path, seed: int) -> Path:
    torch = pytest.importorskip("torch")
    from trt_edge.export import ExportOptions, export_onnx
    from trt_edge.models.mnist import MnistCNN

    torch.manual_seed(seed)
    model = MnistCNN().eval()
    example = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    return export_onnx(model, example, path, ExportOptions(
        input_names=["input"], output_names=["logits"], exporter="torchscript",
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})).path


@pytest.fixture(scope="session")
def cnn_versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("serve_cnn")
    return export_cnn(d / "cnn_v1.onnx", 0), export_cnn(d / "cnn_v2.onnx", 1)


@pytest.fixture(scope="session")
def serve_repo(tmp_path_factory: pytest.TempPathFactory, cnn_versions, minilm_onnx) -> Path:
    """mnist (versions 1 and 2, policy all, dynamic batching), minilm, and two queue-policy models."""
    from trt_edge.serve import ExportTritonOptions, export_triton
    from trt_edge.serve.config import VersionPolicy

    repo = tmp_path_factory.mktemp("repo")
    v1, v2 = cnn_versions
    export_triton(v1, repo, ExportTritonOptions(name="mnist", version=1, max_batch_size=8,
                                                preferred_batch_size=(4, 8), max_queue_delay_microseconds=2000,
                                                version_policy=VersionPolicy(kind="all")))
    export_triton(v2, repo, ExportTritonOptions(name="mnist", version=2, max_batch_size=8,
                                                preferred_batch_size=(4, 8), max_queue_delay_microseconds=2000,
                                                version_policy=VersionPolicy(kind="all"), overwrite=True))
    export_triton(minilm_onnx, repo, ExportTritonOptions(name="minilm", max_batch_size=4,
                                                         max_queue_delay_microseconds=1000))
    # A queue of one: a request held by a long queue delay fills it.
    export_triton(v1, repo, ExportTritonOptions(name="mnist_queue", max_batch_size=8, preferred_batch_size=(8,),
                                                max_queue_delay_microseconds=1_000_000, max_queue_size=1))
    # Requests time out in the queue (1 ms) long before the batch is sent (300 ms).
    export_triton(v1, repo, ExportTritonOptions(name="mnist_timeout", max_batch_size=8, preferred_batch_size=(8,),
                                                max_queue_delay_microseconds=300_000,
                                                default_timeout_microseconds=1000))
    # No config.pbtxt at all: everything auto-completed from the model (Triton's auto-complete).
    (repo / "bare" / "1").mkdir(parents=True)
    (repo / "bare" / "1" / "model.onnx").write_bytes(v2.read_bytes())
    return repo


@pytest.fixture(scope="module")
def server(serve_repo):
    from trt_edge.serve import BackgroundServer, ServeOptions

    srv = BackgroundServer(ServeOptions(serve_repo, model_control_mode="explicit", load_models=("*",)))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    import tritonclient.http as httpclient
    c = httpclient.InferenceServerClient(server.url, concurrency=8, network_timeout=60)
    yield c
    c.close()


@pytest.fixture(scope="session")
def reference():
    """Direct (service-free) inference: artifact path -> feed -> outputs."""
    from trt_edge.runtime.onnxrt import run_onnx

    def run(path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_onnx(path, feed)
    return run
