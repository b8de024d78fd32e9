"""The Python API end to end: export -> optimize -> INT8 -> run -> compare.

Run: python examples/python_api.py [OUT_DIR]   (executed by tests/docs/test_examples.py)
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from trt_edge.data.mnist import load_mnist
from trt_edge.export import ExportOptions, export_onnx
from trt_edge.graph.pipeline import OptimizeOptions, optimize_file
from trt_edge.models.mnist import train_mnist_cnn
from trt_edge.numerics import compare_outputs
from trt_edge.quant import (CalibrationOptions, NumpyReader, QuantizeOptions, calibrate, quantize_qdq,
                            write_trt_cache)
from trt_edge.artifacts import save_onnx
from trt_edge.runtime import OnnxRuntimeRunner


def main(out: Path) -> None:
    split = load_mnist()
    model = train_mnist_cnn(split, epochs=1)

    # 1. torch -> ONNX, verified against torch at two batch sizes.
    exported = export_onnx(model, torch.from_numpy(split.x_test[:2]), out / "mnist.onnx",
                           ExportOptions(input_names=["input"], output_names=["logits"]))

    # 2. Graph passes, each checked (checker + shape inference) and verified in ONNX Runtime.
    report = optimize_file(exported.path, out / "mnist.opt.onnx", OptimizeOptions())
    print(report.table())

    # 3. Our calibrator -> ranges (+ a TensorRT 10 cache) -> explicit Q/DQ model. The default method, "auto",
    #    picks entropy / percentile / MSE / max per op-type group by the model's output SQNR.
    ranges = calibrate(out / "mnist.opt.onnx", NumpyReader({"input": split.x_train[:256]}, batch_size=32),
                       CalibrationOptions())
    ranges.save(out / "mnist.ranges.json")
    write_trt_cache(ranges, out / "mnist.cache")
    int8 = quantize_qdq(out / "mnist.opt.onnx", ranges, QuantizeOptions())
    save_onnx(int8, out / "mnist.int8.onnx")

    # 4. Run both with the same Runner interface and compare on held-out digits.
    feed = {"input": split.x_test[:500]}
    with OnnxRuntimeRunner(out / "mnist.opt.onnx") as fp32, OnnxRuntimeRunner(out / "mnist.int8.onnx") as q:
        cmp = compare_outputs(q.infer(feed), fp32.infer(feed), classifier=True)
    print(cmp.table())
    top1 = cmp.outputs[0].top1_agreement
    print(f"INT8 vs FP32 top-1 agreement on 500 held-out digits: {100 * top1:.1f}%")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
