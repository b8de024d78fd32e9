"""The service on loopback, driven by the real Triton client (tritonclient.http) and by raw HTTP
for the malformed requests a client library cannot send. After every error case the server must
still answer /v2/health/ready."""
from __future__ import annotations

import gzip
import http.client
import json
import zlib

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


def raw(server, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    conn = http.client.HTTPConnection(server.cfg.host, server.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, dict(resp.getheaders()), data
    finally:
        conn.close()


def assert_ready(server) -> None:
    status, _, _ = raw(server, "GET", "/v2/health/ready")
    assert status == 200


def error_of(status_body) -> str:
    return json.loads(status_body)["error"]


def infer_request(name: str, shape, datatype: str = "FP32", data=None, **extra) -> bytes:
    entry = {"name": name, "shape": list(shape), "datatype": datatype}
    if data is not None:
        entry["data"] = data
    entry.update(extra)
    return json.dumps({"inputs": [entry]}).encode()


def mnist_input(x: np.ndarray, binary: bool = True):
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return inp


# ---- metadata --------------------------------------------------------------------------------------

def test_server_and_model_metadata_follow_the_kserve_v2_shapes(client, server):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "trt-edge" and "binary_tensor_data" in meta["extensions"]
    m = client.get_model_metadata("mnist")
    assert m["versions"] == ["1", "2"] and m["platform"] == "onnxruntime_onnx"
    assert m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert m["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.get_model_metadata("mnist", "1")["versions"] == ["1"]
    mini = client.get_model_metadata("minilm")
    assert {i["name"]: i["datatype"] for i in mini["inputs"]} == {"input_ids": "INT64", "attention_mask": "INT64"}
    assert mini["inputs"][0]["shape"] == [-1, -1]
    assert client.is_model_ready("mnist") and client.is_model_ready("mnist", "2")
    assert not client.is_model_ready("mnist", "7")


def test_model_config_is_tritons_json_and_bare_model_is_auto_completed(client):
    cfg = client.get_model_config("mnist")
    assert cfg["max_batch_size"] == 8 and cfg["platform"] == "onnxruntime_onnx"
    assert cfg["dynamic_batching"]["preferred_batch_size"] == [4, 8]
    assert cfg["input"][0]["dims"] == [1, 28, 28] and cfg["input"][0]["data_type"] == "TYPE_FP32"
    bare = client.get_model_config("bare")  # no config.pbtxt on disk
    assert bare["name"] == "bare" and bare["max_batch_size"] == 4 and "dynamic_batching" in bare
    assert bare["output"][0] == {**bare["output"][0], "name": "logits", "dims": [10]}


# ---- inference ------------------------------------------------------------------------------------

@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_mnist_inference_matches_direct_onnxruntime(client, cnn_versions, reference, rng, binary):
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    out = httpclient.InferRequestedOutput("logits", binary_data=binary)
    res = client.infer("mnist", [mnist_input(x, binary)], model_version="1", outputs=[out], request_id="r-7")
    got = res.as_numpy("logits")
    assert res.get_response()["id"] == "r-7" and res.get_response()["model_version"] == "1"
    assert ("parameters" in res.get_output("logits")) == binary
    np.testing.assert_allclose(got, reference(cnn_versions[0], {"input": x})["logits"], rtol=1e-5, atol=1e-6)


def test_two_versions_serve_their_own_weights_and_latest_is_default(client, cnn_versions, reference, rng):
    x = rng.random((2, 1, 28, 28), dtype=np.float32)
    r1 = client.infer("mnist", [mnist_input(x)], model_version="1").as_numpy("logits")
    r2 = client.infer("mnist", [mnist_input(x)], model_version="2").as_numpy("logits")
    latest = client.infer("mnist", [mnist_input(x)]).as_numpy("logits")
    np.testing.assert_allclose(r1, reference(cnn_versions[0], {"input": x})["logits"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r2, reference(cnn_versions[1], {"input": x})["logits"], rtol=1e-5, atol=1e-6)
    assert np.abs(r1 - r2).max() > 1e-3
    np.testing.assert_array_equal(latest, r2)


def test_minilm_int64_inputs_json_and_binary(client, minilm_bundle, minilm_onnx, reference):
    feed = minilm_bundle.tokenize(["A robot arm picks up the red cube.", "The path ahead is blocked."])
    want = reference(minilm_onnx, feed)["embeddings"]
    for binary in (True, False):
        inputs = []
        for name in ("input_ids", "attention_mask"):
            i = httpclient.InferInput(name, list(feed[name].shape), "INT64")
            i.set_data_from_numpy(feed[name], binary_data=binary)
            inputs.append(i)
        got = client.infer("minilm", inputs, outputs=[httpclient.InferRequestedOutput(
            "embeddings", binary_data=binary)]).as_numpy("embeddings")
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_bodies_are_accepted(client, cnn_versions, reference, rng, algorithm):
    x = rng.random((2, 1, 28, 28), dtype=np.float32)
    res = client.infer("mnist", [mnist_input(x)], model_version="1", request_compression_algorithm=algorithm)
    np.testing.assert_allclose(res.as_numpy("logits"), reference(cnn_versions[0], {"input": x})["logits"],
                               rtol=1e-5, atol=1e-6)


def test_concurrent_requests_are_batched_and_never_crossed(server, cnn_versions, reference, rng):
    """48 single-digit requests from 16 concurrent asyncio clients (tritonclient.http.aio: it waits in
    epoll, so the in-process server thread gets the GIL; gevent's hub in this thread would starve it)."""
    import asyncio

    import tritonclient.http.aio as aioclient

    xs = [rng.random((1, 1, 28, 28), dtype=np.float32) for _ in range(48)]

    async def run() -> tuple[list[np.ndarray], dict, int]:
        c = aioclient.InferenceServerClient(server.url, conn_limit=16)
        try:
            before = (await c.get_inference_statistics("mnist", "1"))["model_stats"][0]["execution_count"]
            sem = asyncio.Semaphore(16)

            async def one(x: np.ndarray) -> np.ndarray:
                async with sem:
                    return (await c.infer("mnist", [mnist_input(x)], model_version="1")).as_numpy("logits")
            outs = await asyncio.gather(*(one(x) for x in xs))
            stats = (await c.get_inference_statistics("mnist", "1"))["model_stats"][0]
            return list(outs), stats, before
        finally:
            await c.close()

    outs, stats, before = asyncio.run(run())
    want = reference(cnn_versions[0], {"input": np.concatenate(xs)})["logits"]
    np.testing.assert_allclose(np.concatenate(outs), want, rtol=1e-5, atol=1e-6)
    assert stats["execution_count"] - before < 48  # some requests shared an execution
    assert any(b["batch_size"] > 1 for b in stats["batch_stats"])
    assert stats["inference_stats"]["success"]["count"] >= 48


# ---- repository API ---------------------------------------------------------------------------------

def test_unload_and_load_a_model(client, server):
    index = {(r["name"], r.get("version")): r.get("state") for r in client.get_model_repository_index()}
    assert index[("mnist", "1")] == "READY" and index[("mnist", "2")] == "READY"
    client.unload_model("bare")
    assert not client.is_model_ready("bare")
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("bare")
    assert e.value.status() == "404"
    states = {r["name"]: r for r in client.get_model_repository_index()}
    assert states["bare"]["state"] == "UNAVAILABLE" and states["bare"]["reason"] == "unloaded"
    client.load_model("bare")
    assert client.is_model_ready("bare")
    with pytest.raises(InferenceServerException) as e:
        client.load_model("no_such_model")
    assert e.value.status() == "404"
    assert_ready(server)


def test_statistics_and_prometheus_metrics(client, server, rng):
    client.infer("mnist", [mnist_input(rng.random((1, 1, 28, 28), dtype=np.float32))], model_version="2")
    stats = client.get_inference_statistics("mnist", "2")["model_stats"][0]
    assert stats["inference_count"] >= 1 and stats["inference_stats"]["compute_infer"]["ns"] > 0
    conn = http.client.HTTPConnection(server.cfg.host, server.metrics_port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    assert 'nv_inference_request_success_total{model="mnist",version="2"}' in text
    assert "nv_inference_exec_count_total" in text and "trt_edge_batch_size_bucket" in text


# ---- errors, each with its status; health after each -----------------------------------------------

def _x(shape=(1, 1, 28, 28)):
    return np.zeros(shape, np.float32)


CLIENT_ERRORS = {
    "unknown model": (lambda c: c.infer("nope", [mnist_input(_x())]), "404", "unknown model"),
    "unknown version": (lambda c: c.infer("mnist", [mnist_input(_x())], model_version="9"), "404", "version 9"),
    "wrong datatype": (lambda c: c.infer("mnist", [_typed("input", np.zeros((1, 1, 28, 28)), "FP64")]), "400",
                       "data-type is 'FP64'"),
    "wrong shape": (lambda c: c.infer("mnist", [mnist_input(_x((1, 2, 28, 28)))]), "400", "unexpected shape"),
    "unknown input": (lambda c: c.infer("mnist", [mnist_input(_x()), _typed("extra", _x())]), "400",
                      "unexpected inference input 'extra'"),
    "missing input": (lambda c: c.infer("minilm", [_typed("input_ids", np.zeros((1, 4), np.int64), "INT64")]),
                      "400", "missing required input(s) ['attention_mask']"),
    "unknown output": (lambda c: c.infer("mnist", [mnist_input(_x())],
                                         outputs=[httpclient.InferRequestedOutput("nope")]), "400",
                       "unexpected inference output"),
    "batch above max_batch_size": (lambda c: c.infer("mnist", [mnist_input(_x((9, 1, 28, 28)))]), "400",
                                   "batch-size must be <= 8"),
}


def _typed(name, arr, datatype="FP32"):
    i = httpclient.InferInput(name, list(arr.shape), datatype)
    i.set_data_from_numpy(arr)
    return i


@pytest.mark.parametrize("case", sorted(CLIENT_ERRORS))
def test_client_visible_errors(client, server, case):
    call, status, text = CLIENT_ERRORS[case]
    with pytest.raises(InferenceServerException) as e:
        call(client)
    assert e.value.status() == status, e.value.message()
    assert text in e.value.message()
    assert_ready(server)


def _binary_request(payload: bytes, size: int, shape=(1, 1, 28, 28), outputs=None) -> tuple[bytes, int]:
    head = {"inputs": [{"name": "input", "shape": list(shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": size}}]}
    if outputs is not None:
        head["outputs"] = outputs
    h = json.dumps(head).encode()
    return h + payload, len(h)


GOOD = np.zeros((1, 1, 28, 28), np.float32).tobytes()
RAW_ERRORS = {
    "malformed json": (b"{not json", {}, 400, "failed to parse"),
    "json nested deeper than 100": (b'{"inputs": ' + b"[" * 150 + b"]" * 150 + b"}", {}, 400, "nesting depth"),
    "binary size mismatch": (_binary_request(GOOD[:-4], 3132)[0],
                             {"Inference-Header-Content-Length": str(_binary_request(GOOD[:-4], 3132)[1])},
                             400, "unexpected size for input 'input'"),
    "extra binary data": (_binary_request(GOOD + b"xxxx", 3136)[0],
                          {"Inference-Header-Content-Length": str(_binary_request(GOOD, 3136)[1])},
                          400, "unexpected additional input data"),
    "header length not a number": (_binary_request(GOOD, 3136)[0], {"Inference-Header-Content-Length": "abc"},
                                   400, "Unable to parse Inference-Header-Content-Length"),
    "header length out of int32": (_binary_request(GOOD, 3136)[0],
                                   {"Inference-Header-Content-Length": str(2**40)}, 400, "out of range"),
    "header length beyond the body": (_binary_request(GOOD, 3136)[0],
                                      {"Inference-Header-Content-Length": "999999"}, 400, "should be in range"),
    "negative dim": (infer_request("input", [-1, 1, 28, 28], data=[0.0]), {}, 400, "negative dimension"),
    "overflowing dims": (infer_request("input", [2**62, 2**62, 28, 28], data=[0.0]), {}, 400,
                         "maximum allowed input size"),
    "duplicate output": (json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                                 "data": [0.0] * 784}],
                                     "outputs": [{"name": "logits"}, {"name": "logits"}]}).encode(), {}, 400,
                         "more than once"),
    "element count mismatch": (infer_request("input", [1, 1, 28, 28], data=[0.0] * 5), {}, 400,
                               "unexpected number of elements"),
    "unsupported content-encoding": (b"{}", {"Content-Encoding": "br"}, 501, "Unsupported Content-Encoding"),
    "malformed gzip": (b"\x1f\x8b\x08\x00garbage-not-deflate", {"Content-Encoding": "gzip"}, 400,
                       "could not be decompressed"),
    "truncated gzip": (gzip.compress(infer_request("input", [1, 1, 28, 28], data=[0.0] * 784))[:-20],
                       {"Content-Encoding": "gzip"}, 400, "truncated"),
    "body above max input size after decompression": (lambda: gzip.compress(b" " * (65 * 1024 * 1024), 1),
                                                      {"Content-Encoding": "gzip"}, 400, "exceeds the maximum"),
}


@pytest.mark.parametrize("case", sorted(RAW_ERRORS))
def test_malformed_requests(server, case):
    body, headers, status, text = RAW_ERRORS[case]
    body = body() if callable(body) else body
    got, _, data = raw(server, "POST", "/v2/models/mnist/versions/1/infer", body,
                       {"Content-Type": "application/octet-stream", **headers})
    assert got == status, data[:300]
    assert text in error_of(data)
    assert_ready(server)


def test_full_queue_and_queue_timeout_answer_503(server, rng):
    c = httpclient.InferenceServerClient(server.url, concurrency=4)
    try:
        x = rng.random((1, 1, 28, 28), dtype=np.float32)
        held = c.async_infer("mnist_queue", [mnist_input(x)])  # waits up to 1 s for a batch of 8
        import time
        deadline = time.monotonic() + 5
        while server.service.repository.get("mnist_queue").scheduler.pending < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        with pytest.raises(InferenceServerException) as e:
            c.infer("mnist_queue", [mnist_input(x)])
        assert e.value.status() == "503" and "Exceeds maximum queue size" in e.value.message()
        assert held.get_result().as_numpy("logits").shape == (1, 10)
        with pytest.raises(InferenceServerException) as e:
            c.infer("mnist_timeout", [mnist_input(x)])
        assert e.value.status() == "503" and "Request timeout expired" in e.value.message()
    finally:
        c.close()
    assert_ready(server)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_malformed_gzip_bodies_do_not_grow_the_process(server):
    good = gzip.compress(b'{"inputs": [' + b"1," * 200_000)
    bad_crc = good[:-8] + bytes(8)                            # complete stream, wrong CRC and length
    bodies = [b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4,  # gzip header, then not deflate
              good[:-30],                                     # truncated
              bad_crc,
              zlib.compress(b"x" * 100_000)]                  # zlib, not gzip
    headers = {"Content-Encoding": "gzip"}

    def blast(n: int) -> None:
        for i in range(n):
            status, _, _ = raw(server, "POST", "/v2/models/mnist/infer", bodies[i % len(bodies)], headers)
            assert status == 400
    blast(15)  # warm up allocator pools
    before = _rss_bytes()
    blast(100)
    grown = _rss_bytes() - before
    assert grown < 4 * 1024 * 1024, f"RSS grew {grown / 2**20:.1f} MiB over 100 malformed gzip bodies"
    assert_ready(server)


def test_unknown_route_and_method_answer_json_errors(server):
    status, _, data = raw(server, "GET", "/v2/nothing")
    assert status == 404 and "not an endpoint" in error_of(data)
    status, _, data = raw(server, "GET", "/v2/models/mnist/infer")
    assert status == 405
    assert_ready(server)
