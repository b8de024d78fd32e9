"""trt_edge.bench.inspect and `trt-edge inspect`: I/O, opsets, op histogram, parameters, sizes."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trt_edge.artifacts import save_onnx, write_sidecar
from trt_edge.bench import inspect_artifact, summarize_model
from trt_edge.cli import main


def _model_with_subgraph_and_constant() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")             # 12 params
    bias = numpy_helper.from_array(np.zeros(4, np.float16), "bias")            # 4 params (fp16)
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.arange(5, dtype=np.int64)))
    then_g = helper.make_graph([helper.make_node("Relu", ["y"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Neg", ["y"], ["e"]), helper.make_node("Relu", ["e"], ["e2"])],
                               "else", [], [helper.make_tensor_value_info("e2", TensorProto.FLOAT, None)])
    nodes = [const, helper.make_node("MatMul", ["x", "w"], ["y"]),
             helper.make_node("If", ["flag"], ["z"], then_branch=then_g, else_branch=else_g)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3]),
                                       helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 4])], [w, bias])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
                          producer_name="unit-test", producer_version="1.0")
    helper.set_model_props(m, {"author": "trt_edge"})
    return m


def test_summary_counts_everything():
    s = summarize_model(_model_with_subgraph_and_constant())
    assert s.opsets == {"ai.onnx": 17, "com.example": 1} and s.producer == "unit-test 1.0"
    assert [i.name for i in s.inputs] == ["x", "flag"] and s.outputs[0].shape == ("n", 4)
    assert s.op_histogram == {"Relu": 2, "Constant": 1, "MatMul": 1, "If": 1, "Neg": 1}
    assert s.num_nodes == 6
    assert s.num_parameters == 12 + 4 + 5
    assert s.parameter_bytes == 12 * 4 + 4 * 2 + 5 * 8
    assert s.parameters_by_dtype == {"float": 12, "int64": 5, "float16": 4}
    assert s.metadata == {"author": "trt_edge"} and s.file_bytes is None


def test_mnist_parameters_match_the_initializers(mnist_onnx, mnist_model):
    s = inspect_artifact(mnist_onnx)
    model = onnx.load(str(mnist_onnx))
    arrays = [numpy_helper.to_array(i) for i in model.graph.initializer]
    assert s.num_parameters >= sum(a.size for a in arrays)
    assert s.file_bytes == mnist_onnx.stat().st_size and s.external_data_bytes == 0
    assert "Conv" in s.op_histogram and s.inputs[0].name == "input" and s.outputs[0].name == "logits"
    # Conv+BN export: the torch parameters (without BN running stats) are all in the ONNX file.
    torch_params = sum(p.numel() for p in mnist_model.parameters())
    assert abs(s.num_parameters - torch_params) <= sum(b.numel() for b in mnist_model.buffers())


def test_external_data_size_without_loading_weights(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((256, 256)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])],
                          [numpy_helper.from_array(w, "w")])
    path = save_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "big.onnx",
                     external_data=True)
    s = inspect_artifact(path)
    assert s.num_parameters == w.size and s.parameter_bytes == w.nbytes
    assert s.external_data_files == ["big.onnx.data"]
    assert s.external_data_bytes == (tmp_path / "big.onnx.data").stat().st_size >= w.nbytes
    assert s.size_on_disk == path.stat().st_size + s.external_data_bytes
    (tmp_path / "big.onnx.data").unlink()
    from trt_edge.errors import ArtifactError
    with pytest.raises(ArtifactError, match="external data"):
        inspect_artifact(path)


def test_engine_summary_from_sidecar(tmp_path):
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"\x01" * 100)
    s = inspect_artifact(engine)
    assert s.sidecar is None and "needs TensorRT" in s.table()
    write_sidecar(engine, "tensorrt-engine", extra={"precision": "int8", "tensorrt_version": "10.3.0"})
    s = inspect_artifact(engine)
    assert s.sidecar["precision"] == "int8" and "10.3.0" in s.table()


def test_cli_inspect(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(_model_with_subgraph_and_constant(), path)
    out = tmp_path / "s.json"
    assert main(["inspect", str(path), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "parameters  21" in text and "com.example:1" in text and "Relu" in text
    d = json.loads(out.read_text())
    assert d["num_parameters"] == 21 and d["inputs"][0] == {"name": "x", "dtype": "float32", "shape": ["n", 3]}
    assert main(["inspect", str(path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["op_histogram"]["Relu"] == 2
    assert main(["inspect", str(tmp_path / "missing.onnx")]) == 2
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    assert main(["inspect", str(tmp_path / "bad.onnx")]) == 2
