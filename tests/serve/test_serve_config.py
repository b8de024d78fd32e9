"""config.pbtxt: Triton's field names both ways, checked by Triton's own ModelConfig protobuf."""
from __future__ import annotations

import numpy as np
import pytest

from trt_edge.errors import ArtifactError
from trt_edge.serve.backend import ServedSignature, ServedTensor
from trt_edge.serve.config import (DynamicBatching, InstanceGroup, ModelConfig, QueuePolicy, TensorConfig,
                                   VersionPolicy, autocomplete, format_config, parse_config)

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")

TRITON_STYLE = """
name: "mnist"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { specific: { versions: [1, 3] } }
input [ { name: "input", data_type: TYPE_FP32, dims: [ 1, 28, 28 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
instance_group [ { count: 2, kind: KIND_CPU } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
  default_queue_policy { max_queue_size: 16, default_timeout_microseconds: 5000 }
}
optimization { execution_accelerators { cpu_execution_accelerator: [ { name: "openvino" } ] } }
model_warmup [ { name: "w{", batch_size: 1 } ]  # unknown to us: skipped, Triton still reads it
parameters { key: "note" value: { string_value: "x" } }
"""


def test_a_triton_written_config_parses_with_its_fields():
    text_format.Parse(TRITON_STYLE, model_config_pb2.ModelConfig())  # it is a valid Triton config
    cfg = parse_config(TRITON_STYLE)
    assert cfg.max_batch_size == 8 and cfg.platform == "onnxruntime_onnx"
    assert cfg.version_policy == VersionPolicy(kind="specific", versions=(1, 3))
    assert cfg.input == (TensorConfig("input", "TYPE_FP32", (1, 28, 28)),)
    assert cfg.instance_group == (InstanceGroup(count=2, kind="KIND_CPU"),) and cfg.instance_count == 2
    assert cfg.dynamic_batching == DynamicBatching((4, 8), 100, False, QueuePolicy("REJECT", 5000, False, 16))
    assert cfg.parameters == (("note", "x"),)


def test_written_config_parses_into_tritons_model_config_unchanged():
    cfg = ModelConfig(name="m", platform="tensorrt_plan", max_batch_size=16,
                      input=(TensorConfig("x", "TYPE_FP16", (3, -1, -1)),),
                      output=(TensorConfig("y", "TYPE_INT64", (1,)),),
                      instance_group=(InstanceGroup(count=3, kind="KIND_GPU", gpus=(0,)),),
                      dynamic_batching=DynamicBatching((8, 16), 250, True, QueuePolicy("DELAY", 10, True, 64)),
                      version_policy=VersionPolicy(kind="latest", num_versions=2))
    text = format_config(cfg)
    triton = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert triton.max_batch_size == 16 and list(triton.input[0].dims) == [3, -1, -1]
    assert model_config_pb2.DataType.Name(triton.input[0].data_type) == "TYPE_FP16"
    assert triton.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert triton.dynamic_batching.default_queue_policy.timeout_action == model_config_pb2.ModelQueuePolicy.DELAY
    assert triton.version_policy.latest.num_versions == 2
    assert parse_config(text) == cfg


def test_version_policy_selects_like_triton():
    assert VersionPolicy().select([3, 1, 2]) == [3]
    assert VersionPolicy(kind="latest", num_versions=2).select([3, 1, 2]) == [2, 3]
    assert VersionPolicy(kind="all").select([2, 1]) == [1, 2]
    assert VersionPolicy(kind="specific", versions=(1, 5)).select([1, 2]) == [1]


SIG = ServedSignature(inputs=(ServedTensor("input", np.dtype(np.float32), (-1, 1, 28, 28), 0),),
                      outputs=(ServedTensor("logits", np.dtype(np.float32), (-1, 10), 0),),
                      batch_max=None, batchable=True)


def test_autocomplete_fills_from_the_signature():
    cfg = autocomplete(ModelConfig(), SIG, name="m", platform="onnxruntime_onnx")
    assert cfg.max_batch_size == 4 and cfg.dynamic_batching == DynamicBatching()
    assert cfg.input == (TensorConfig("input", "TYPE_FP32", (1, 28, 28)),)
    fixed = ServedSignature(SIG.inputs, SIG.outputs, None, batchable=False)
    cfg0 = autocomplete(ModelConfig(), fixed, name="m", platform="onnxruntime_onnx")
    assert cfg0.max_batch_size == 0 and cfg0.input[0].dims == (-1, 1, 28, 28) and cfg0.dynamic_batching is None


@pytest.mark.parametrize("cfg, match", [
    (ModelConfig(name="other"), "does not match the folder name"),
    (ModelConfig(platform="tensorrt_plan"), "platform"),
    (ModelConfig(max_batch_size=8, input=(TensorConfig("input", "TYPE_FP16", (1, 28, 28)),)), "data_type"),
    (ModelConfig(max_batch_size=8, input=(TensorConfig("input", "TYPE_FP32", (1, 28, 29)),)), "do not match"),
    (ModelConfig(max_batch_size=8, input=(TensorConfig("image", "TYPE_FP32", (1, 28, 28)),)), "not an input"),
    (ModelConfig(max_batch_size=4, dynamic_batching=DynamicBatching(preferred_batch_size=(8,))),
     "preferred_batch_size"),
])
def test_autocomplete_refuses_configs_that_contradict_the_model(cfg, match):
    with pytest.raises(ArtifactError, match=match):
        autocomplete(cfg, SIG, name="m", platform="onnxruntime_onnx")


def test_bad_config_text_names_the_file():
    with pytest.raises(ArtifactError, match="cfg.pbtxt: not a valid Triton model configuration"):
        parse_config("max_batch_size: eight", source="cfg.pbtxt")
