"""Calibration + explicit Q/DQ on the real models (MNIST CNN, MobileNetV2, MiniLM)."""
from __future__ import annotations

import collections
import tracemalloc

import numpy as np
import onnx
import pytest

from trt_edge.numerics import compare_arrays
from trt_edge.quant import CalibrationOptions, NumpyReader, QuantizeOptions, calibrate, quantize_qdq
from trt_edge.quant.collect import collect_histograms
from trt_edge.quant.qdq import count_ops, plan_qdq, tensors_to_calibrate

ort = pytest.importorskip("onnxruntime")


def _session(model: onnx.ModelProto, optimized_path=None, float_qdq: bool = False):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if float_qdq:  # fusions off: Q/DQ computed in float (TensorRT's maths), the same on every CPU
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
    for n in model.graph.node:
        for t in n.input:
            out[t].append(n)
    return out


@pytest.fixture(scope="module")
def mnist_fp32(mnist_onnx, mnist_split):
    model = onnx.load(mnist_onnx)
    logits = _session(model).run(None, {"input": mnist_split.x_test})[0]
    return model, logits


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(1) == labels))


@pytest.mark.parametrize("target", ["tensorrt", "onnxruntime"], ids=["trt_rules", "ort_kernels"])
def test_mnist_int8_accuracy_and_rules(mnist_fp32, mnist_split, target, tmp_path):
    model, ref = mnist_fp32
    reader = NumpyReader({"input": mnist_split.x_train}, batch_size=64, max_samples=512)
    ranges = calibrate(model, reader, CalibrationOptions(method="percentile", target=target, show_progress=False))
    qmodel = quantize_qdq(model, ranges, QuantizeOptions(target=target))
    onnx.checker.check_model(qmodel, full_check=True)
    assert [i.name for i in qmodel.graph.input] == ["input"]
    assert [o.name for o in qmodel.graph.output] == ["logits"]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in qmodel.graph.initializer}
    for n in qmodel.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits[n.input[2]]
            if zp.dtype == np.int8:
                assert not zp.any()  # symmetric: zero point 0
            else:  # onnxruntime target: uint8 zp 128 (the same grid) or 0 after a ReLU
                assert target == "onnxruntime" and set(np.unique(zp)) <= {0, 128}
        if n.op_type in ("Conv", "Gemm"):  # weights: int8 per output channel
            w_dq = next(p for p in qmodel.graph.node if p.output[0] == n.input[1])
            assert w_dq.op_type == "DequantizeLinear"
            assert inits[w_dq.input[0]].dtype == np.int8
            axis = next(a.i for a in w_dq.attribute if a.name == "axis")
            assert axis == 0 and inits[w_dq.input[1]].shape == (inits[w_dq.input[0]].shape[0],)
            x_dq = next(p for p in qmodel.graph.node if p.output[0] == n.input[0])
            assert x_dq.op_type == "DequantizeLinear"
    # Quality with Q/DQ in float (CPU-independent), against the same run's FP32: 1,000 held-out
    # digits resolve 0.1 points, the margin is 10 digits.
    logits = _session(qmodel, float_qdq=True).run(None, {"input": mnist_split.x_test})[0]
    fp32_acc, int8_acc = _accuracy(ref, mnist_split.y_test), _accuracy(logits, mnist_split.y_test)
    assert int8_acc >= fp32_acc - 0.01, (fp32_acc, int8_acc)
    assert compare_arrays("logits", logits, ref).sqnr_db > 20


def _has_vnni() -> str | None:
    from trt_edge.quant.cpu import has_vnni, is_x86
    if is_x86() and not has_vnni():
        return "needs AVX512-VNNI or AVX-VNNI: ONNX Runtime's u8s8 kernels saturate int16 pair sums without it"
    return None


@pytest.mark.parametrize("scheme", [
    pytest.param("u8s8", marks=pytest.mark.skipif(bool(_has_vnni()), reason=str(_has_vnni()))),
    "u8u8",  # widened to int16 before multiplying: no saturation on any x86-64 (AVX2 suffices)
])
def test_ort_int8_kernels_fuse_and_match_float_qdq(mnist_fp32, mnist_split, scheme, tmp_path):
    """ONNX Runtime's real int8 kernels (after its own fusion) give the float Q/DQ maths' accuracy."""
    model, ref = mnist_fp32
    reader = NumpyReader({"input": mnist_split.x_train}, batch_size=64, max_samples=512)
    ranges = calibrate(model, reader, CalibrationOptions(method="percentile", target="onnxruntime",
                                                         show_progress=False))
    qmodel = quantize_qdq(model, ranges, QuantizeOptions(target="onnxruntime", ort_scheme=scheme))
    assert any(p.value.endswith(f"scheme={scheme}") for p in qmodel.metadata_props)
    weight_dtypes = {onnx.numpy_helper.to_array(i).dtype for i in qmodel.graph.initializer
                     if i.name.endswith("_quantized") and len(i.dims) >= 2}
    assert weight_dtypes == {np.dtype(np.int8) if scheme == "u8s8" else np.dtype(np.uint8)}
    fused = _session(qmodel, tmp_path / "opt.onnx").run(None, {"input": mnist_split.x_test})[0]
    ops = collections.Counter(n.op_type for n in onnx.load(tmp_path / "opt.onnx").graph.node)
    assert ops["QLinearConv"] == 2 and ops["QGemm"] + ops["QLinearMatMul"] >= 1, ops
    floated = _session(qmodel, float_qdq=True).run(None, {"input": mnist_split.x_test})[0]
    # int32 accumulation vs float: the same grid, so the two agree far above the INT8 noise
    assert compare_arrays("logits", fused, floated).sqnr_db > 30
    assert _accuracy(fused, mnist_split.y_test) >= _accuracy(floated, mnist_split.y_test) - 0.005


def test_ort_scheme_choice_by_cpu_flags():
    from trt_edge.quant.cpu import ort_int8_scheme
    assert ort_int8_scheme(flags={"avx2", "avx512_vnni"}, machine="x86_64")[0] == "u8s8"
    assert ort_int8_scheme(flags={"avx2", "avx_vnni"}, machine="x86_64")[0] == "u8s8"
    scheme, why = ort_int8_scheme(flags={"avx2", "fma"}, machine="x86_64")  # e.g. AMD EPYC Zen 2/3
    assert scheme == "u8u8" and "no VNNI" in why
    assert ort_int8_scheme(flags=set(), machine="aarch64")[0] == "u8s8"
    assert ort_int8_scheme("u8u8", flags={"avx512_vnni"})[0] == "u8u8"


def test_entropy_calibration_end_to_end_on_mnist(mnist_fp32, mnist_split):
    """TensorRT-parity entropy runs end to end; its accuracy is reported (see docs), not asserted
    against FP32: EntropyCalibration2 clips MNIST's background spike (known, documented)."""
    model, ref = mnist_fp32
    ranges = calibrate(model, NumpyReader({"input": mnist_split.x_train}, batch_size=64, max_samples=256),
                       CalibrationOptions(method="entropy", show_progress=False))
    assert ranges.settings["method"] == "entropy"
    assert {r.method for r in ranges.ranges.values()} == {"entropy"}
    for r in ranges.ranges.values():
        assert 0 < r.amax <= r.observed_amax + 1e-6
    logits = _session(quantize_qdq(model, ranges)).run(None, {"input": mnist_split.x_test[:200]})[0]
    assert np.isfinite(logits).all()


def test_collection_memory_does_not_grow_with_samples(mnist_onnx, mnist_split):
    model = onnx.load(mnist_onnx)
    tensors = tensors_to_calibrate(model)
    x = mnist_split.x_train[:64]

    def peak(n_batches: int) -> int:
        tracemalloc.start()
        coll = collect_histograms(model, ({"input": x} for _ in range(n_batches)), tensors, show_progress=False)
        p = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert coll.num_batches == n_batches and coll.num_samples == 64 * n_batches
        return p

    small, large = peak(3), peak(30)
    assert large < 1.3 * small + (1 << 20), (small, large)


def test_mobilenet_residual_adds_and_agreement(mobilenet_onnx, imagenet_photos):
    model = onnx.load(mobilenet_onnx)
    plan = plan_qdq(model)
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    residual = [n for n in adds if any(i in plan.activations for i in n.input)]
    assert len(residual) == 10  # MobileNetV2's ten inverted-residual skip connections
    # the skip branch is quantized; the projection Conv's output (its only consumer: the Add) is
    # left to TensorRT's Conv+Add fusion
    producers = {o: n for n in model.graph.node for o in n.output}
    for n in residual:
        quantized = [i for i in n.input if i in plan.activations]
        assert len(quantized) == 1, n.name
        fused = next(i for i in n.input if i not in plan.activations)
        assert producers[fused].op_type == "Conv"
    photos = imagenet_photos
    flips = photos[..., ::-1].copy()
    ranges = calibrate(model, NumpyReader({"input": np.concatenate([photos, flips])}, batch_size=4),
                       CalibrationOptions(method="percentile", show_progress=False))
    qmodel = quantize_qdq(model, ranges)
    ops = count_ops(qmodel)
    assert ops["QuantizeLinear"] > 50
    ref = _session(model).run(None, {"input": photos})[0]
    out = _session(qmodel).run(None, {"input": photos})[0]
    cmp = compare_arrays("logits", out, ref, classifier=True)
    # 13 photos calibrated on themselves and their mirror images: measured 11.6 dB, 13/13 agree.
    assert cmp.top1_agreement >= 0.75 and cmp.sqnr_db > 9, cmp


def test_minilm_int8_keeps_sensitive_ops_float(minilm_onnx, minilm_bundle):
    from trt_edge.data.sentences import calibration_sentences
    from trt_edge.quant import TextReader

    model = onnx.load(minilm_onnx)
    reader = TextReader(calibration_sentences(16), minilm_bundle.tokenizer, batch_size=8, max_length=64)
    ranges = calibrate(model, reader, CalibrationOptions(method="max", show_progress=False))
    qmodel = quantize_qdq(model, ranges)
    producers = {o: n for n in qmodel.graph.node for o in n.output}
    for n in qmodel.graph.node:
        if n.op_type in ("Softmax", "LayerNormalization", "ReduceMean", "ReduceSum", "Where"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear"
                       for i in n.input), n.name
    # the mask path: nodes computed from the mask (and constants) alone, up to where it joins the scores
    constant = {i.name for i in qmodel.graph.initializer} | {
        o for n in qmodel.graph.node if n.op_type == "Constant" for o in n.output}
    mask_path = {"attention_mask"}
    on_path = 0
    for n in qmodel.graph.node:
        live = [i for i in n.input if i and i not in constant]
        if live and all(i in mask_path for i in live):
            mask_path |= set(n.output)
            on_path += 1
            assert n.op_type not in ("QuantizeLinear", "DequantizeLinear"), n.name
    assert on_path >= 3
    feed = minilm_bundle.tokenize(["The robot stops at the red light.", "A drone maps the warehouse."])
    ref = _session(model).run(None, feed)[0]
    out = _session(qmodel).run(None, feed)[0]
    assert compare_arrays("embeddings", out, ref).cosine > 0.95


def test_exclusions_and_stale_ranges(mnist_fp32, mnist_split):
    from trt_edge.errors import ArtifactError

    model, _ = mnist_fp32
    ranges = calibrate(model, NumpyReader({"input": mnist_split.x_train[:128]}, batch_size=64),
                       CalibrationOptions(method="max", show_progress=False))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    q = quantize_qdq(model, ranges, QuantizeOptions(exclude_op_types=("Gemm",), exclude_nodes=(convs[0],)))
    consumers = _consumers(q)
    gemm_inputs = [n.input[0] for n in q.graph.node if n.op_type == "Gemm"]
    producers = {o: n.op_type for n in q.graph.node for o in n.output}
    assert all(producers.get(t) != "DequantizeLinear" for t in gemm_inputs)
    assert not any(c.op_type == "QuantizeLinear" for c in consumers["input"])  # first conv kept float
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    changed.graph.initializer[0].raw_data = bytes(len(changed.graph.initializer[0].raw_data))
    with pytest.raises(ArtifactError, match="Stale"):
        quantize_qdq(changed, ranges)
