"""Hot reload under load: no request lost or crossed; bad versions refused with automatic rollback."""
from __future__ import annotations

import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trt_edge.registry.hot_reload import HotModel
from trt_edge.registry.policy import TrustPolicy
from trt_edge.registry.store import Registry

pytest.importorskip("onnxruntime")


def _model(weight: np.ndarray) -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "lin",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                          [numpy_helper.from_array(weight, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _publish(reg: Registry, tmp, weight, keys, **kw):
    d = tmp / f"src{len(reg.versions('lin')) + 1}"
    d.mkdir()
    onnx.save(_model(weight), d / "model.onnx")
    return reg.publish("lin", d, private_key=keys.private_key, **kw)


def served_before_reload(results, w1) -> int:
    return sum(np.allclose(y, x @ w1, rtol=1e-5, atol=1e-5) for x, y in results)


def test_hot_reload_under_load(tmp_path, keys):
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((8, 4), dtype=np.float32), rng.standard_normal((8, 4), dtype=np.float32)
    reg = Registry(tmp_path / "repo", create=True)
    _publish(reg, tmp_path, w1, keys)
    policy = TrustPolicy.from_args(True, [keys.public_key])
    hm = HotModel(reg, "lin", policy=policy, instances=2)
    assert hm.version == 1

    xs = [rng.standard_normal((2, 8), dtype=np.float32) for _ in range(64)]
    errors, results = [], []
    lock = threading.Lock()
    go, stop = threading.Event(), threading.Event()
    attempts = [0] * 8

    def caller(k: int) -> None:
        go.wait()
        for i in range(20000):  # bounded; stops soon after the reload
            if stop.is_set() and i >= 20:
                break
            attempts[k] += 1
            x = xs[(k * 7 + i) % len(xs)]
            try:
                y = hm.infer({"x": x}).outputs["y"]
            except Exception as exc:  # noqa: BLE001 - any failure is a lost request
                with lock:
                    errors.append(repr(exc))
                continue
            with lock:
                results.append((x, y))

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    go.set()
    _publish(reg, tmp_path, w2, keys)          # promoted in the registry ...
    assert hm.reload() == 2                    # ... and swapped in while the callers run
    threading.Event().wait(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert len(results) == sum(attempts)
    assert served_before_reload(results, w1) > 0
    served = {1: 0, 2: 0}
    for x, y in results:  # each answer is exactly v1's or v2's answer for that input: never crossed
        if np.allclose(y, x @ w1, rtol=1e-5, atol=1e-5):
            served[1] += 1
        else:
            np.testing.assert_allclose(y, x @ w2, rtol=1e-5, atol=1e-5)
            served[2] += 1
    assert served[2] > 0
    np.testing.assert_allclose(hm.infer({"x": xs[0]}).outputs["y"], xs[0] @ w2, rtol=1e-5, atol=1e-5)

    # a tampered version is refused; the registry rolls back to the version still serving
    v3 = _publish(reg, tmp_path, w1 * 3, keys)
    (v3.path / "model.onnx").write_bytes((v3.path / "model.onnx").read_bytes()[:-4] + b"\x00\x00\x00\x00")
    assert hm.reload() == 2
    assert reg.active_version("lin") == 2
    # a version whose smoke inference gives NaN is refused the same way
    _publish(reg, tmp_path, np.full((8, 4), np.nan, np.float32), keys)
    assert hm.reload() == 2 and reg.active_version("lin") == 2
    events = [(e["event"], e.get("version")) for e in reg.audit.entries()]
    assert ("refuse", 3) in events and ("refuse", 4) in events and ("load", 2) in events
    hm.close()
