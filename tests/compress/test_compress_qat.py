"""QAT: fake-quant equals ONNX Q/DQ, placement is the precision path's, learned scales are exported."""
from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from trt_edge.compress._train import TrainOptions, fine_tune
from trt_edge.compress.qat import QatOptions, _classes, _scale, prepare_qat, ptq_qdq
from trt_edge.compress.report import ort_run, ort_session
from trt_edge.quant.methods import symmetric_scale


def _qdq_model(scale: float, axis=None, per_channel_scales=None, shape=(4, 6)):
    scales = np.array(per_channel_scales if per_channel_scales is not None else scale, np.float32)
    s = numpy_helper.from_array(scales, "s")
    zp = numpy_helper.from_array(np.zeros(scales.shape, np.int8), "zp")
    kw = {"axis": axis} if axis is not None else {}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], **kw),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], **kw)]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, shape)], [s, zp])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_activation_fake_quant_is_onnx_quantize_dequantize(tmp_path):
    cls = _classes()
    rng = np.random.default_rng()
    amax = float(np.float32(rng.uniform(0.5, 3.0)))   # the parameter is float32
    q = cls.ActFakeQuant(amax)
    scale = float(symmetric_scale(amax))
    assert float(_scale(q.amax.detach())) == scale   # the same float32 scale as the precision path
    x = (rng.standard_normal((4, 6)) * 2).astype(np.float32)
    x[0, :3] = [amax * 1.5, -amax * 1.5, 2.5 * scale]  # saturation and a rounding tie
    path = tmp_path / "qdq.onnx"
    onnx.save(_qdq_model(scale), str(path))
    want = ort_session(path, optimize=False).run(None, {"x": x})[0]
    np.testing.assert_array_equal(q(torch.from_numpy(x)).detach().numpy(), want)


def test_weight_fake_quant_is_the_precision_paths_per_channel_quantization():
    cls = _classes()
    w = torch.randn(8, 3, 3, 3)
    wq = cls.WeightFakeQuant(0)
    from trt_edge.quant.methods import per_channel_amax
    s = symmetric_scale(per_channel_amax(w.numpy(), 0))
    want = np.clip(np.rint(w.numpy() / s.reshape(-1, 1, 1, 1)), -127, 127) * s.reshape(-1, 1, 1, 1)
    np.testing.assert_array_equal(wq(w).numpy(), want.astype(np.float32))


def test_fake_quant_gradients_are_straight_through_and_reach_the_scale():
    cls = _classes()
    q = cls.ActFakeQuant(1.0)
    x = torch.tensor([0.2, -0.5, 3.0, -3.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]   # identity inside the range, zero when clipped
    assert q.amax.grad is not None and float(q.amax.grad) != 0.0


def test_qat_exports_the_precision_path_graph_with_learned_scales(baseline, tmp_path):
    task, split, model, base = baseline
    calib = split.x_train[:256]
    # the harsh setting: one scale per weight tensor (per-channel PTQ loses ~nothing on this model)
    ptq = ptq_qdq(model, calib, tmp_path / "ptq.onnx", per_channel=False)
    ptq_acc = float(np.mean(ort_run(tmp_path / "ptq.onnx", split.x_test).argmax(1) == split.y_test))
    qm = prepare_qat(model, calib, QatOptions(per_channel=False))
    start, check0 = qm.export(tmp_path / "qat0.onnx", split.x_test[:2], split.x_test)
    ops = lambda m: [n.op_type for n in m.graph.node]  # noqa: E731
    assert ops(start) == ops(ptq)                        # the same Q/DQ placement as PTQ
    assert ops(start).count("QuantizeLinear") == len(qm.act_quant) == 6
    assert check0["top1_agreement"] == 1.0
    init_ranges = qm.ranges()
    fine_tune(qm.module, task.loader, TrainOptions(epochs=1, lr=3e-4))
    learned = qm.ranges()
    assert any(abs(learned[t] - init_ranges[t]) > 1e-4 * init_ranges[t] for t in learned)  # ranges trained
    qdq, check = qm.export(tmp_path / "qat.onnx", split.x_test[:2], split.x_test)
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    for t, amax in learned.items():
        exported = inits[f"{t}_scale"]
        assert exported == symmetric_scale(amax)                                  # learned, not recomputed
        assert exported == _scale(qm.act_quant[t].amax.detach()).numpy()         # what training used
    assert check["top1_agreement"] == 1.0 and check["sqnr_db"] > 40.0
    qat_acc = float(np.mean(ort_run(tmp_path / "qat.onnx", split.x_test).argmax(1) == split.y_test))
    assert qat_acc >= ptq_acc - 0.01
    onnx.checker.check_model(qdq, full_check=True)
