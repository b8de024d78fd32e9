"""`trt-edge export-triton` writes a repository Triton's ModelConfig accepts; `trt-edge serve`
(a real subprocess) loads that same folder, answers, and drains on SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from trt_edge.cli import main

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_export_triton_then_serve_the_same_folder(tmp_path, cnn_versions, reference):
    repo = tmp_path / "repo"
    rc = main(["export-triton", str(cnn_versions[0]), "-o", str(repo), "--name", "digits", "--max-batch-size", "16",
               "--preferred-batch-size", "8", "16", "--max-queue-delay-us", "500", "--instances", "2"])
    assert rc == 0
    text = (repo / "digits" / "config.pbtxt").read_text()
    triton = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert triton.platform == "onnxruntime_onnx" and triton.max_batch_size == 16
    assert list(triton.dynamic_batching.preferred_batch_size) == [8, 16]
    assert triton.instance_group[0].count == 2 and list(triton.input[0].dims) == [1, 28, 28]
    assert (repo / "digits" / "1" / "model.onnx").read_bytes() == cnn_versions[0].read_bytes()
    assert main(["export-triton", str(cnn_versions[0]), "-o", str(repo), "--name", "digits"]) == 2  # exists

    port, mport = _free_port(), _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "trt_edge", "serve", "--model-repository", str(repo),
                             "--http-port", str(port), "--metrics-port", str(mport)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(base + "/v2/health/ready", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
        body = json.dumps({"inputs": [{"name": "input", "shape": [2, 1, 28, 28], "datatype": "FP32",
                                       "data": x.ravel().tolist()}]}).encode()
        req = urllib.request.Request(base + "/v2/models/digits/infer", data=body,
                                     headers={"Content-Type": "application/json"})
        out = json.loads(urllib.request.urlopen(req, timeout=30).read())["outputs"][0]
        np.testing.assert_allclose(np.asarray(out["data"], np.float32).reshape(out["shape"]),
                                   reference(cnn_versions[0], {"input": x})["logits"], rtol=1e-5, atol=1e-5)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
        assert 'nv_inference_count_total{model="digits",version="1"} 2.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            log, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            log, _ = proc.communicate()
    assert proc.returncode == 0, log
    access = [json.loads(line.split("INFO ", 1)[1]) for line in log.splitlines() if '"path":"/v2/models/digits/infer"'
              in line]
    assert access and access[0]["status"] == 200 and access[0]["model"] == "digits/1"


def test_serve_without_a_repository_exits_2(tmp_path, capsys):
    assert main(["serve", "--model-repository", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_stop_drains_a_request_still_in_the_batch_queue(serve_repo):
    """Stopping (as on SIGTERM) waits for the request held by a 1 s queue delay: it gets its answer."""
    import concurrent.futures

    httpclient = pytest.importorskip("tritonclient.http")
    from trt_edge.serve import BackgroundServer, ServeOptions, ServerConfig

    srv = BackgroundServer(ServeOptions(serve_repo, model_control_mode="explicit", load_models=("mnist_queue",),
                                        access_log=False), ServerConfig(http_port=0, metrics_port=None)).start()
    c = httpclient.InferenceServerClient(srv.url)
    x = np.zeros((1, 1, 28, 28), np.float32)
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(c.infer, "mnist_queue", [inp])
        sched = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                sched = srv.service.repository.get("mnist_queue").scheduler
            except Exception:  # noqa: BLE001 - not loaded yet
                pass
            if sched is not None and sched.pending:
                break
            time.sleep(0.005)
        assert sched is not None and sched.pending == 1
        srv.stop()
        assert fut.result(timeout=30).as_numpy("logits").shape == (1, 10)
    c.close()
    assert srv.service.repository.loaded() == []  # models closed after the drain


def test_a_model_that_fails_to_load_stops_the_start_unless_told_otherwise(tmp_path, cnn_versions):
    from trt_edge.errors import TrtEdgeError
    from trt_edge.serve import BackgroundServer, ServeOptions, ServerConfig

    repo = tmp_path / "repo"
    for name in ("good", "broken"):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "1" / "model.onnx").write_bytes(cnn_versions[0].read_bytes())
    (repo / "broken" / "config.pbtxt").write_text(
        'max_batch_size: 4\ninput [ { name: "image" data_type: TYPE_FP32 dims: [1, 28, 28] } ]\n')
    cfg = ServerConfig(http_port=0, metrics_port=None)
    with pytest.raises(TrtEdgeError, match="failed to start"):
        BackgroundServer(ServeOptions(repo, access_log=False), cfg).start()
    with BackgroundServer(ServeOptions(repo, access_log=False, exit_on_error=False), cfg) as srv:
        index = {r["name"]: r for r in srv.service.repository.index()}
        assert index["good"]["state"] == "READY"
        assert index["broken"]["state"] == "UNAVAILABLE" and "'image' is not an input" in index["broken"]["reason"]
        assert urllib.request.urlopen(f"http://{srv.url}/v2/health/ready", timeout=10).status == 200
