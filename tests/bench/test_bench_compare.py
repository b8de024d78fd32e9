"""trt_edge.bench.compare and `trt-edge compare`: the figures on real and constructed models."""
from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from trt_edge.bench import CompareOptions, InputOptions, compare
from trt_edge.cli import main
from trt_edge.errors import InvalidInputError
from trt_edge.runtime import run_onnx

from bench_tiny_models import linear_model


def _perturbed_mnist(path, tmp_path, scale: float, seed: int):
    """MNIST ONNX with every float initializer multiplied by (1 + scale * noise)."""
    model = onnx.load(str(path))
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size > 1:
            noisy = arr * (1 + scale * rng.standard_normal(arr.shape)).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), init.name))
    out = tmp_path / f"mnist_noisy_{seed}.onnx"
    onnx.save(model, out)
    return out


def test_identical_models_agree_exactly(mnist_onnx, mnist_split):
    opts = CompareOptions(inputs=InputOptions(inputs={"input": mnist_split.x_test[:32]}), tolerance="fp32")
    res = compare(mnist_onnx, mnist_onnx, opts)
    o = res.report.outputs[0]
    assert (o.name, o.shape) == ("logits", (32, 10))
    assert o.max_abs_error == 0 and o.nmse == 0 and math.isinf(o.sqnr_db) and o.top1_agreement == 1.0
    assert res.passed


def test_figures_match_an_independent_computation(mnist_onnx, mnist_split, tmp_path):
    noisy = _perturbed_mnist(mnist_onnx, tmp_path, scale=0.05, seed=1)
    x = mnist_split.x_test[:200]
    res = compare(mnist_onnx, noisy, CompareOptions(inputs=InputOptions(inputs={"input": x}), tolerance="fp32"))
    ref = run_onnx(mnist_onnx, {"input": x})["logits"].astype(np.float64)
    got = run_onnx(noisy, {"input": x})["logits"].astype(np.float64)
    o = res.report.outputs[0]
    err = got - ref
    assert o.max_abs_error == pytest.approx(np.abs(err).max(), rel=1e-9)
    assert o.nmse == pytest.approx((err ** 2).sum() / (ref ** 2).sum(), rel=1e-9)
    assert o.sqnr_db == pytest.approx(10 * np.log10((ref ** 2).sum() / (err ** 2).sum()), rel=1e-9)
    assert o.top1_agreement == pytest.approx(np.mean(ref.argmax(1) == got.argmax(1)))
    assert 5 < o.sqnr_db < 60            # 5% weight noise: clearly different, same ballpark
    assert o.top1_agreement >= 0.7       # the classifier mostly still agrees
    assert not res.passed and o.violations > 0
    # More noise, lower SQNR: the figure ranks the damage.
    worse = compare(mnist_onnx, _perturbed_mnist(mnist_onnx, tmp_path, 0.2, 2),
                    CompareOptions(inputs=InputOptions(inputs={"input": x})))
    assert worse.report.outputs[0].sqnr_db < o.sqnr_db


def test_torch_module_against_its_export(mnist_model, mnist_onnx, mnist_split):
    opts = CompareOptions(inputs=InputOptions(inputs={"input": mnist_split.x_test[:64]}), tolerance="export")
    res = compare(mnist_model, mnist_onnx, opts)
    assert res.reference["backend"] == "torch" and res.candidate["backend"] == "onnxruntime"
    o = res.report.outputs[0]
    assert res.passed and o.top1_agreement == 1.0 and o.sqnr_db > 80


def test_random_runs_are_pooled(mnist_onnx, tmp_path):
    res = compare(mnist_onnx, mnist_onnx, CompareOptions(inputs=InputOptions(batch=3, seed=5), runs=4))
    assert res.runs == 4 and res.report.outputs[0].shape == (4, 3, 10)


def test_output_names_and_dtype_casting(rng, tmp_path):
    w, b = rng.standard_normal((5, 3)), rng.standard_normal(3)
    ref = linear_model(w, b, out_name="scores")
    cand = linear_model(w, b, out_name="y")  # different name, same single output: matched by position
    res = compare(ref, cand, CompareOptions(inputs=InputOptions(batch=4), tolerance="fp32"))
    assert res.output_map == {"scores": "y"} and res.passed
    assert res.report.outputs[0].top1_agreement == 1.0  # "scores" looks like a classifier output
    no_cls = compare(ref, cand, CompareOptions(inputs=InputOptions(batch=4), classifier=False))
    assert no_cls.report.outputs[0].top1_agreement is None


def test_compare_option_errors():
    with pytest.raises(InvalidInputError, match="tolerance"):
        CompareOptions(tolerance="int4")
    with pytest.raises(InvalidInputError, match="runs"):
        CompareOptions(runs=0)


FACTORY = textwrap.dedent('''
    import numpy as np
    import torch

    def make():
        rng = np.random.default_rng(3)
        lin = torch.nn.Linear(6, 4)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(rng.standard_normal((4, 6)).astype(np.float32)))
            lin.bias.copy_(torch.from_numpy(rng.standard_normal(4).astype(np.float32)))
        return lin
''')


def test_cli_compare_with_torch_factory_and_exit_codes(tmp_path, capsys):
    pytest.importorskip("torch")
    (tmp_path / "factory_mod.py").write_text(FACTORY)
    r = np.random.default_rng(3)
    w, b = r.standard_normal((4, 6)).T, r.standard_normal(4)
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(linear_model(w, b), good)
    onnx.save(linear_model(w, b + 1e-2), bad)
    out = tmp_path / "cmp.json"
    rc = main(["compare", "--torch", f"{tmp_path / 'factory_mod.py'}:make", str(good), "--batch", "8",
               "--runs", "2", "--tolerance", "export", "--json", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["passed"] and d["reference"]["backend"] == "torch" and d["runs"] == 2
    assert d["report"]["outputs"][0]["shape"] == [2, 8, 4]
    assert main(["compare", "--torch", f"{tmp_path / 'factory_mod.py'}:make", str(bad), "--tolerance", "fp32"]) == 1
    assert "FAILED" in capsys.readouterr().out
    # user errors: exit code 2
    assert main(["compare", str(good)]) == 2
    assert main(["compare", "--torch", "no_such_module_xyz:make", str(good)]) == 2
    assert main(["compare", str(good), str(bad), "--rtol", "1e-3"]) == 2
    np.savez(tmp_path / "in.npz", input=np.ones((2, 6), np.float32))
    assert main(["compare", str(good), str(bad), "--inputs", str(tmp_path / "in.npz"),
                 "--rtol", "1e-1", "--atol", "1e-1"]) == 0
