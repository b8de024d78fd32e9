"""The protobuf message type behind ``config.pbtxt``, with Triton's field and enum names.

Built at run time from a descriptor (no generated code, no dependency on Triton's packages): the
subset of ``inference.ModelConfig`` the service acts on, under our own package name. Only its text
and JSON forms are used; its binary wire form is not Triton's. :func:`strip_unknown_fields` cuts
out the top-level fields we do not declare (``optimization``, ``model_warmup [...]``...), which
protobuf's own ``allow_unknown_field`` cannot skip when they use Triton's list syntax.
"""
from __future__ import annotations

import functools
import re
from typing import Any

# Triton's DataType enum (model_config.proto), and the wire names of the KServe v2 protocol.
DATA_TYPES = ("TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64",
              "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64",
              "TYPE_STRING", "TYPE_BF16")

@functools.lru_cache(maxsize=None)
def message_class() -> Any:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: PLC0415

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="trt_edge_serve_model_config.proto",
                                             package="trt_edge_serve", syntax="proto3")

    def enum(name: str, values: list[str]) -> None:
        e = fdp.enum_type.add(name=name)
        for i, v in enumerate(values):
            e.value.add(name=v, number=i)

    enum("DataType", list(DATA_TYPES))

    def message(name: str, fields: list[tuple], nested: Any = None) -> Any:
        m = (fdp.message_type if nested is None else nested).add(name=name)
        for number, (fname, ftype, *rest) in enumerate(fields, 1):
            label = F.LABEL_REPEATED if rest and rest[0] == "repeated" else F.LABEL_OPTIONAL
            f = m.field.add(name=fname, number=number, label=label)
            if isinstance(ftype, str):
                f.type = F.TYPE_MESSAGE if not ftype.startswith("enum:") else F.TYPE_ENUM
                f.type_name = ".trt_edge_serve." + ftype.removeprefix("enum:")
            else:
                f.type = ftype
            if rest and rest[0] == "oneof":
                f.oneof_index = 0
        return m

    T = F
    message("ModelTensorReshape", [("shape", T.TYPE_INT64, "repeated")])
    enum("Format", ["FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"])
    message("ModelInput", [("name", T.TYPE_STRING), ("data_type", "enum:DataType"),
                           ("format", "enum:Format"), ("dims", T.TYPE_INT64, "repeated"),
                           ("reshape", "ModelTensorReshape"), ("is_shape_tensor", T.TYPE_BOOL),
                           ("allow_ragged_batch", T.TYPE_BOOL), ("optional", T.TYPE_BOOL)])
    message("ModelOutput", [("name", T.TYPE_STRING), ("data_type", "enum:DataType"),
                            ("dims", T.TYPE_INT64, "repeated"), ("reshape", "ModelTensorReshape"),
                            ("label_filename", T.TYPE_STRING), ("is_shape_tensor", T.TYPE_BOOL)])
    ig = message("ModelInstanceGroup", [("name", T.TYPE_STRING), ("kind", "enum:ModelInstanceGroup.Kind"),
                                        ("count", T.TYPE_INT32), ("gpus", T.TYPE_INT32, "repeated"),
                                        ("passive", T.TYPE_BOOL), ("host_policy", T.TYPE_STRING)])
    kind = ig.enum_type.add(name="Kind")
    for i, v in enumerate(("KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL")):
        kind.value.add(name=v, number=i)
    qp = message("ModelQueuePolicy", [("timeout_action", "enum:ModelQueuePolicy.TimeoutAction"),
                                      ("default_timeout_microseconds", T.TYPE_UINT64),
                                      ("allow_timeout_override", T.TYPE_BOOL),
                                      ("max_queue_size", T.TYPE_UINT32)])
    action = qp.enum_type.add(name="TimeoutAction")
    for i, v in enumerate(("REJECT", "DELAY")):
        action.value.add(name=v, number=i)
    message("ModelDynamicBatching", [("preferred_batch_size", T.TYPE_INT32, "repeated"),
                                     ("max_queue_delay_microseconds", T.TYPE_UINT64),
                                     ("preserve_ordering", T.TYPE_BOOL),
                                     ("priority_levels", T.TYPE_UINT64),
                                     ("default_priority_level", T.TYPE_UINT64),
                                     ("default_queue_policy", "ModelQueuePolicy")])
    vp = message("ModelVersionPolicy", [("latest", "ModelVersionPolicy.Latest", "oneof"),
                                        ("all", "ModelVersionPolicy.All", "oneof"),
                                        ("specific", "ModelVersionPolicy.Specific", "oneof")])
    vp.oneof_decl.add(name="policy_choice")
    message("Latest", [("num_versions", T.TYPE_UINT32)], nested=vp.nested_type)
    message("All", [], nested=vp.nested_type)
    message("Specific", [("versions", T.TYPE_INT64, "repeated")], nested=vp.nested_type)
    message("ModelParameter", [("string_value", T.TYPE_STRING)])
    mc = message("ModelConfig", [("name", T.TYPE_STRING), ("platform", T.TYPE_STRING),
                                 ("backend", T.TYPE_STRING), ("version_policy", "ModelVersionPolicy"),
                                 ("max_batch_size", T.TYPE_INT32), ("input", "ModelInput", "repeated"),
                                 ("output", "ModelOutput", "repeated"),
                                 ("instance_group", "ModelInstanceGroup", "repeated"),
                                 ("default_model_filename", T.TYPE_STRING),
                                 ("dynamic_batching", "ModelDynamicBatching"),
                                 ("parameters", "ModelConfig.ParametersEntry", "repeated")])
    entry = mc.nested_type.add(name="ParametersEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                    type_name=".trt_edge_serve.ModelParameter")
    # max_batch_size is proto3 "optional" in spirit: we need to know whether the file set it.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("trt_edge_serve.ModelConfig"))


def _skip_string(text: str, i: int) -> int:
    quote, i = text[i], i + 1
    while i < len(text) and text[i] != quote:
        i += 2 if text[i] == "\\" else 1
    return i + 1


def _skip_space(text: str, i: int) -> int:
    while i < len(text):
        if text[i].isspace():
            i += 1
        elif text[i] == "#":
            nl = text.find("\n", i)
            i = len(text) if nl < 0 else nl + 1
        else:
            break
    return i


def strip_unknown_fields(text: str, known: set[str]) -> tuple[str, list[str]]:
    """Drop top-level fields whose names ``known`` lacks; returns (text, dropped names).

    protobuf's ``allow_unknown_field`` cannot skip Triton's list syntax (``model_warmup [ {...} ]``),
    so unknown top-level fields are cut out here, honouring strings and comments.
    """
    out, dropped, i, n = [], [], 0, len(text)
    while True:
        i = _skip_space(text, i)
        if i >= n:
            break
        m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(text, i)
        if m is None:  # not a field: let the protobuf parser report it
            out.append(text[i:])
            break
        start, i = i, _skip_space(text, m.end())
        if i < n and text[i] == ":":
            i = _skip_space(text, i + 1)
        if i < n and text[i] in "{[<":
            depth = 0
            while i < n:
                c = text[i]
                if c in "\"'":
                    i = _skip_string(text, i)
                    continue
                if c == "#":
                    i = _skip_space(text, i)
                    continue
                depth += c in "{[<"
                depth -= c in "}]>"
                i += 1
                if depth == 0:
                    break
        elif i < n and text[i] in "\"'":
            while i < n and text[i] in "\"'":  # adjacent strings concatenate
                i = _skip_space(text, _skip_string(text, i))
        else:
            while i < n and not text[i].isspace() and text[i] not in ",;#":
                i += 1
        i = _skip_space(text, i)
        if i < n and text[i] in ",;":
            i += 1
        if m.group(0) in known:
            out.append(text[start:i].rstrip() + "\n")
        else:
            dropped.append(m.group(0))
    return "".join(out), sorted(set(dropped))
