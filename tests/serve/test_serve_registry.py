"""The service on a signed registry: require-signed, hot reload under load with rollback, drift metric."""
from __future__ import annotations

import asyncio
import logging
import shutil
import time
import urllib.request

import numpy as np
import pytest

pytest.importorskip("model_signing", reason="needs the registry extra")
pytest.importorskip("tritonclient.http.aio")

from trt_edge.registry.drift import DriftReference  # noqa: E402
from trt_edge.registry.policy import TrustPolicy  # noqa: E402
from trt_edge.registry.signing import generate_keypair  # noqa: E402
from trt_edge.registry.store import Registry  # noqa: E402



def _version_src(tmp, onnx_path, tag, reference=None):
    d = tmp / f"src-{tag}"
    d.mkdir()
    shutil.copy(onnx_path, d / "model.onnx")
    if reference is not None:
        reference.save(d / "drift_reference.json")
    return d


def _wait(pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_signed_repository_hot_reload_rollback_and_drift(tmp_path, cnn_versions, reference, caplog):
    from trt_edge.serve import BackgroundServer, ServeOptions
    caplog.set_level(logging.INFO, logger="trt_edge")
    import tritonclient.http.aio as aioclient

    v1_onnx, v2_onnx = cnn_versions
    keys = generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    rng = np.random.default_rng(0)
    digits = rng.random((256, 1, 28, 28), dtype=np.float32) ** 4  # dark images with a few bright pixels
    ref = DriftReference.from_arrays({"input": digits})
    repo = tmp_path / "repo"
    reg = Registry(repo, create=True)
    reg.publish("m", _version_src(tmp_path, v1_onnx, "v1", ref), private_key=keys.private_key)
    unsigned = repo / "plain" / "1"
    unsigned.mkdir(parents=True)
    shutil.copy(v1_onnx, unsigned / "model.onnx")

    policy = TrustPolicy.from_args(True, [keys.public_key])
    options = ServeOptions(repo, model_control_mode="poll", repository_poll_secs=0.2, trust=policy,
                           exit_on_error=False)
    # traffic: 32 batches of 2 fresh images from the calibration distribution, with both versions' answers
    xs = [rng.random((2, 1, 28, 28), dtype=np.float32) ** 4 for _ in range(32)]
    want = {v: [reference(p, {"input": x})["logits"] for x in xs] for v, p in ((1, v1_onnx), (2, v2_onnx))}

    def which(i: int, y) -> int:
        for v, w in want.items():
            if np.allclose(y, w[i], rtol=1e-4, atol=1e-5):
                return v
        return -1

    def metric(text: str, version: str) -> float:
        line = next(ln for ln in text.splitlines() if ln.startswith("trt_edge_input_drift_psi{")
                    and f'version="{version}"' in ln)
        return float(line.rsplit(" ", 1)[1])

    def scrape() -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=10).read().decode()

    with BackgroundServer(options) as srv:
        async def scenario():
            client = aioclient.InferenceServerClient(srv.url)
            try:
                # the unsigned model is refused under the policy; the signed one serves
                assert not await client.is_model_ready("plain")
                assert await client.is_model_ready("m")

                counter = iter(range(10 ** 9))

                async def infer_once():
                    i = next(counter) % len(xs)
                    inp = aioclient.InferInput("input", list(xs[i].shape), "FP32")
                    inp.set_data_from_numpy(xs[i])
                    res = await client.infer("m", [inp])
                    return which(i, res.as_numpy("logits"))

                assert await infer_once() == 1
                served, errors = [], []
                stop = asyncio.Event()

                async def caller():
                    for _ in range(2000):  # bounded
                        if stop.is_set():
                            return
                        try:
                            served.append(await infer_once())
                        except Exception as exc:  # noqa: BLE001 - a dropped request
                            errors.append(repr(exc))

                tasks = [asyncio.create_task(caller()) for _ in range(4)]
                await asyncio.sleep(0.3)
                await asyncio.to_thread(reg.publish, "m", _version_src(tmp_path, v2_onnx, "v2", ref),
                                        private_key=keys.private_key)
                for _ in range(600):  # hot reload to version 2 under load
                    if served and served[-1] == 2:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)
                stop.set()
                await asyncio.gather(*tasks)
                assert not errors, errors[:3]
                assert -1 not in served and 1 in served and served[-1] == 2

                # a tampered version 3 is promoted: refused, registry rolled back to 2, 2 keeps serving
                v3 = await asyncio.to_thread(reg.publish, "m", _version_src(tmp_path, v1_onnx, "v3"),
                                             private_key=keys.private_key, promote=False)
                (v3.path / "model.onnx").write_bytes((v3.path / "model.onnx").read_bytes()[:-2] + b"\x00\x01")
                await asyncio.to_thread(reg.promote, "m", 3)
                ok = await asyncio.to_thread(_wait, lambda: reg.active_version("m") == 2)
                assert ok, "the registry was not rolled back"
                assert await infer_once() == 2
                # the rollback rewrote registry.json: the poller must not take its own write for a change
                await asyncio.sleep(1.0)   # 5 polls
                msgs = [r.getMessage() for r in caplog.records]
                last = max(i for i, m in enumerate(msgs) if "rolled back from version 3 to 2" in m)
                assert not any("model 'm' changed, reloading" in m for m in msgs[last + 1:]), msgs[last:]
                events = [(e["event"], e.get("version")) for e in reg.audit.entries()]
                assert ("refuse", 3) in events

                # drift: in-distribution traffic scores low; bright noise fills the window and scores high
                for _ in range(40):
                    await infer_once()
                calm = metric(await asyncio.to_thread(scrape), "2")
                assert calm < 0.25, calm
                for _ in range(300):  # the window holds the last 256 requests
                    noise = rng.random((4, 1, 28, 28), dtype=np.float32)
                    inp = aioclient.InferInput("input", list(noise.shape), "FP32")
                    inp.set_data_from_numpy(noise)
                    await client.infer("m", [inp])
                assert metric(await asyncio.to_thread(scrape), "2") > 0.25
            finally:
                await client.close()

        asyncio.run(scenario())


def test_smoke_inference_is_differential(tmp_path, cnn_versions):
    """A version that gives NaN where the serving one does not is refused; with nothing serving,
    a feed the model rejects only warns (the generated zeros may not suit the model)."""
    import asyncio

    import onnx
    from onnx import numpy_helper

    from trt_edge.errors import ArtifactError
    from trt_edge.serve.repository import ModelRepository

    v1, _ = cnn_versions
    repo = tmp_path / "repo"
    (repo / "m" / "1").mkdir(parents=True)
    shutil.copy(v1, repo / "m" / "1" / "model.onnx")
    bad = onnx.load(v1)
    for init in bad.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(init).shape, np.nan, np.float32),
                                                  init.name))
    (repo / "m" / "2").mkdir()
    onnx.save(bad, repo / "m" / "2" / "model.onnx")

    async def run():
        r = ModelRepository(repo)
        (repo / "m" / "2").rename(repo / "m" / ".hidden2")
        await r.load("m")                       # v1 serves
        (repo / "m" / ".hidden2").rename(repo / "m" / "2")
        with pytest.raises(ArtifactError, match="non-finite"):
            await r.load("m")                   # v2 (latest) gives NaN where v1 does not: refused
        assert r.get("m").version == "1"
        await r.close()
        r2 = ModelRepository(repo)              # nothing serving: a NaN-on-zeros model only warns
        await r2.load("m")
        assert r2.get("m").version == "2"
        await r2.close()

    asyncio.run(run())
