"""Summaries of models: inputs/outputs, opsets, op histogram, parameters, size on disk.

Weights are never loaded to inspect a model (``load_external_data=False``;
parameter counts come from tensor dims), so multi-GB models inspect instantly.
A TensorRT engine (.plan/.engine) is summarised from its sidecar JSON, since
reading the engine itself would need TensorRT.
"""
from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from ..artifacts import read_sidecar, sha256_file, sidecar_path, to_jsonable
from ..errors import ArtifactError, InvalidInputError
from ..onnx_io import TensorSpec, graph_inputs, graph_outputs, iter_graphs

ENGINE_SUFFIXES = (".plan", ".engine", ".trt")


@dataclasses.dataclass
class ModelSummary:
    path: str | None
    ir_version: int
    opsets: dict[str, int]             # domain ("ai.onnx" for the default) -> version
    producer: str
    graph_name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    num_nodes: int                     # including nodes inside subgraphs
    op_histogram: dict[str, int]       # "Conv", "com.microsoft::Attention", ... most frequent first
    num_parameters: int                # elements of initializers and Constant tensors
    parameter_bytes: int
    parameters_by_dtype: dict[str, int]
    file_bytes: int | None
    external_data_bytes: int
    external_data_files: list[str]
    local_functions: list[str]
    metadata: dict[str, str]
    sha256: str | None

    @property
    def size_on_disk(self) -> int | None:
        return None if self.file_bytes is None else self.file_bytes + self.external_data_bytes

    def to_dict(self) -> dict[str, Any]:
        d = to_jsonable(self)
        d["inputs"] = [_spec_dict(s) for s in self.inputs]
        d["outputs"] = [_spec_dict(s) for s in self.outputs]
        d["size_on_disk"] = self.size_on_disk
        return d

    def table(self) -> str:
        lines = [f"model       {self.path or '(in memory)'}"]
        lines.append(f"producer    {self.producer or '?'}   IR {self.ir_version}   opsets "
                     + ", ".join(f"{d}:{v}" for d, v in self.opsets.items()))
        lines.append("inputs      " + "; ".join(s.describe() for s in self.inputs))
        lines.append("outputs     " + "; ".join(s.describe() for s in self.outputs))
        lines.append(f"parameters  {self.num_parameters:,} ({_human(self.parameter_bytes)}; "
                     + ", ".join(f"{k} {v:,}" for k, v in self.parameters_by_dtype.items()) + ")")
        if self.size_on_disk is not None:
            ext = (f" incl. {_human(self.external_data_bytes)} external data in "
                   f"{', '.join(self.external_data_files)}" if self.external_data_files else "")
            lines.append(f"size        {_human(self.size_on_disk)}{ext}")
        if self.local_functions:
            lines.append(f"functions   {', '.join(self.local_functions)}")
        lines.append(f"nodes       {self.num_nodes} ({len(self.op_histogram)} op types)")
        width = max((len(k) for k in self.op_histogram), default=4)
        for op, count in self.op_histogram.items():
            lines.append(f"  {op:<{width}}  {count:>6}")
        return "\n".join(lines)


def _spec_dict(s: TensorSpec) -> dict[str, Any]:
    return {"name": s.name, "dtype": s.dtype.name, "shape": None if s.shape is None else list(s.shape)}


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _tensor_elements(t: onnx.TensorProto) -> int:
    return int(np.prod(t.dims, dtype=np.int64)) if len(t.dims) else 1


def _tensor_bytes(t: onnx.TensorProto) -> int:
    if t.HasField("raw_data") and t.raw_data:
        return len(t.raw_data)
    if t.data_location == onnx.TensorProto.EXTERNAL:
        info = {e.key: e.value for e in t.external_data}
        if "length" in info:
            return int(info["length"])
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except Exception:  # noqa: BLE001 - strings and exotic types: count elements only
        itemsize = 0
    return _tensor_elements(t) * itemsize


def summarize_model(model: onnx.ModelProto, path: str | os.PathLike[str] | None = None) -> ModelSummary:
    """Summary of a loaded model (``path`` adds file sizes and external data)."""
    ops: collections.Counter[str] = collections.Counter()
    tensors: list[onnx.TensorProto] = []
    num_nodes = 0
    for g in iter_graphs(model.graph):
        tensors.extend(g.initializer)
        tensors.extend(s.values for s in g.sparse_initializer)
        for node in g.node:
            num_nodes += 1
            domain = node.domain if node.domain not in ("", "ai.onnx") else ""
            ops[f"{domain}::{node.op_type}" if domain else node.op_type] += 1
            if node.op_type == "Constant" and not domain:
                tensors.extend(a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR)
    by_dtype: collections.Counter[str] = collections.Counter()
    n_params = n_bytes = 0
    ext_files: set[str] = set()
    for t in tensors:
        count = _tensor_elements(t)
        n_params += count
        n_bytes += _tensor_bytes(t)
        by_dtype[onnx.TensorProto.DataType.Name(t.data_type).lower()] += count
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = {e.key: e.value for e in t.external_data}.get("location")
            if loc:
                ext_files.add(loc)
    file_bytes = ext_bytes = None
    digest = None
    if path is not None:
        p = Path(path)
        file_bytes = p.stat().st_size
        digest = sha256_file(p)
        ext_bytes = 0
        for loc in sorted(ext_files):
            f = p.parent / loc
            if not f.exists():
                raise ArtifactError(f"'{p}' refers to external data '{loc}' which is missing next to it; "
                                    "copy the .data file along with the model.")
            ext_bytes += f.stat().st_size
    return ModelSummary(
        path=None if path is None else os.fspath(path), ir_version=int(model.ir_version),
        opsets={(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import},
        producer=" ".join(x for x in (model.producer_name, model.producer_version) if x),
        graph_name=model.graph.name, inputs=graph_inputs(model), outputs=graph_outputs(model),
        num_nodes=num_nodes, op_histogram=dict(ops.most_common()), num_parameters=n_params,
        parameter_bytes=n_bytes, parameters_by_dtype=dict(by_dtype.most_common()),
        file_bytes=file_bytes, external_data_bytes=ext_bytes or 0, external_data_files=sorted(ext_files),
        local_functions=[f"{f.domain}::{f.name}" if f.domain else f.name for f in model.functions],
        metadata={p.key: p.value for p in model.metadata_props}, sha256=digest)


@dataclasses.dataclass
class EngineSummary:
    path: str
    file_bytes: int
    sha256: str
    sidecar: dict[str, Any] | None
    sidecar_problem: str | None = None  # why a sidecar that exists could not be used

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    def table(self) -> str:
        lines = [f"engine      {self.path}", f"size        {_human(self.file_bytes)}", f"sha256      {self.sha256}"]
        if self.sidecar is None and self.sidecar_problem:
            lines.append(f"sidecar     unusable: {self.sidecar_problem}")
        elif self.sidecar is None:
            lines.append(f"sidecar     none ({sidecar_path(self.path).name} missing): inspecting the engine "
                         "itself needs TensorRT")
        else:
            for key in ("kind", "tensorrt_version", "precision", "gpu", "compute_capability", "created"):
                if key in self.sidecar:
                    lines.append(f"{key:<12}{self.sidecar[key]}")
            for key in ("inputs", "outputs", "profiles"):
                if key in self.sidecar:
                    lines.append(f"{key:<12}{self.sidecar[key]}")
        return "\n".join(lines)


def inspect_artifact(path: str | os.PathLike[str]) -> ModelSummary | EngineSummary:
    """Summary of an .onnx model or a TensorRT engine file."""
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"'{p}' does not exist.")
    if p.is_dir():
        raise InvalidInputError(f"'{p}' is a directory; give a model file.")
    if p.suffix.lower() in ENGINE_SUFFIXES:
        problem = None
        try:
            side: dict[str, Any] | None = read_sidecar(p)
        except ArtifactError as exc:
            side = None
            problem = str(exc) if sidecar_path(p).exists() else None  # damaged, not missing
        return EngineSummary(os.fspath(p), p.stat().st_size, sha256_file(p), side, problem)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises many types
        raise ArtifactError(f"'{p}' is not a readable ONNX model ({exc}).") from exc
    return summarize_model(model, p)


__all__ = ["ModelSummary", "EngineSummary", "summarize_model", "inspect_artifact"]
