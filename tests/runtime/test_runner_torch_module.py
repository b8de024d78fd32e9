"""TorchModuleRunner (the torch reference in compare) and the --torch factory loader."""
from __future__ import annotations

import numpy as np
import pytest

from trt_edge.errors import InvalidInputError, RunnerError
from trt_edge.onnx_io import TensorSpec
from trt_edge.runtime.torch_module import TorchModuleRunner, load_torch_factory

torch = pytest.importorskip("torch")

SPECS = [TensorSpec("a", ("batch", 3), np.dtype(np.float32)), TensorSpec("b", ("batch", 3), np.dtype(np.float32))]


class TwoOut(torch.nn.Module):
    def forward(self, a, b):
        return a + b, a * b


class DictOut(torch.nn.Module):
    def forward(self, a, b):
        return {"sum": a + b}


def test_outputs_are_named_and_validated(rng):
    a, b = rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32)
    with TorchModuleRunner(TwoOut(), SPECS, ["s", "p"]) as r:
        out = r.infer({"a": a, "b": b})
        np.testing.assert_array_equal(out["s"], a + b)
        np.testing.assert_array_equal(out["p"], a * b)
        with pytest.raises(InvalidInputError, match="Dimension 'batch'"):
            r.infer({"a": a, "b": b[:1]})
    with TorchModuleRunner(DictOut(), SPECS) as r:
        assert list(r.infer({"a": a, "b": b})) == ["sum"]
    with TorchModuleRunner(TwoOut(), SPECS, ["only_one"]) as r:
        with pytest.raises(RunnerError, match="returned 2 outputs"):
            r.infer({"a": a, "b": b})


def test_module_errors_are_runner_errors():
    class Broken(torch.nn.Module):
        def forward(self, a, b):
            raise ValueError("boom")

    with TorchModuleRunner(Broken(), SPECS) as r:
        with pytest.raises(RunnerError, match="boom"):
            r.infer({"a": np.zeros((1, 3), np.float32), "b": np.zeros((1, 3), np.float32)})
    with pytest.raises(InvalidInputError, match="input specs"):
        TorchModuleRunner(TwoOut(), [])


def test_factory_loader(tmp_path):
    f = tmp_path / "factories_for_test.py"
    f.write_text("import torch\n\ndef good():\n    return torch.nn.Identity()\n\ndef bad():\n    return 3\n")
    assert isinstance(load_torch_factory(f"{f}:good"), torch.nn.Identity)
    with pytest.raises(InvalidInputError, match="not a torch.nn.Module"):
        load_torch_factory(f"{f}:bad")
    with pytest.raises(InvalidInputError, match="no callable 'nothing'"):
        load_torch_factory(f"{f}:nothing")
    with pytest.raises(InvalidInputError, match="package.module:factory_function"):
        load_torch_factory("just_a_name")
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_torch_factory(f"{tmp_path / 'missing.py'}:good")
    assert isinstance(load_torch_factory("torch.nn:Identity"), torch.nn.Identity)
