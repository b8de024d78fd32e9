"""Model I/O description and input generation, independent of any backend."""
from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from .errors import InvalidInputError

Dim = int | str | None


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints for fixed dims, a string or None for dynamic ones) and dtype."""

    name: str
    shape: tuple[Dim, ...] | None  # None: rank unknown
    dtype: np.dtype

    @property
    def is_dynamic(self) -> bool:
        return self.shape is None or any(not isinstance(d, int) or d < 0 for d in self.shape)

    def describe(self) -> str:
        shape = "?" if self.shape is None else "[" + ", ".join(
            str(d) if d is not None else "?" for d in self.shape) + "]"
        return f"{self.name}: {self.dtype.name}{shape}"


def _value_info_spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    tt = vi.type.tensor_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)) if tt.elem_type else np.dtype("float32")
    shape: tuple[Dim, ...] | None = None
    if tt.HasField("shape"):
        dims: list[Dim] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        shape = tuple(dims)
    return TensorSpec(vi.name, shape, dtype)


def graph_inputs(model: onnx.ModelProto) -> list[TensorSpec]:
    """Real inputs: graph inputs that are not initializers (IR < 4 lists both)."""
    inits = {i.name for i in model.graph.initializer}
    return [_value_info_spec(i) for i in model.graph.input if i.name not in inits]


def graph_outputs(model: onnx.ModelProto) -> list[TensorSpec]:
    return [_value_info_spec(o) for o in model.graph.output]


def concrete_shape(spec: TensorSpec, dim_values: Mapping[str, int] | None = None,
                   default_dim: int = 1) -> tuple[int, ...]:
    """Resolve dynamic dims by name from ``dim_values`` (e.g. {"batch": 8}), else ``default_dim``."""
    if spec.shape is None:
        raise InvalidInputError(f"Input '{spec.name}' has unknown rank: give its shape explicitly "
                                f"(e.g. --shapes {spec.name}:1x3x224x224).")
    dim_values = dim_values or {}
    out = []
    for d in spec.shape:
        if isinstance(d, int) and d >= 0:
            out.append(d)
        elif isinstance(d, str) and d in dim_values:
            out.append(int(dim_values[d]))
        else:
            out.append(default_dim)
    return tuple(out)


def random_inputs(specs: Sequence[TensorSpec], shapes: Mapping[str, Sequence[int]] | None = None,
                  dim_values: Mapping[str, int] | None = None, seed: int = 0,
                  int_high: int = 100) -> dict[str, np.ndarray]:
    """Random feeds: normal floats, small non-negative ints (token ids), random bools.

    Integer inputs named like attention masks get ones, since zeros would mask
    everything and hide numerical differences.
    """
    rng = np.random.default_rng(seed)
    shapes = shapes or {}
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = tuple(shapes[spec.name]) if spec.name in shapes else concrete_shape(spec, dim_values)
        if np.issubdtype(spec.dtype, np.floating):
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype == np.bool_:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(np.bool_)
        elif np.issubdtype(spec.dtype, np.integer):
            if "mask" in spec.name.lower():
                feeds[spec.name] = np.ones(shape, dtype=spec.dtype)
            elif "type" in spec.name.lower():
                feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
            else:
                feeds[spec.name] = rng.integers(0, int_high, shape).astype(spec.dtype)
        else:
            raise InvalidInputError(f"Cannot generate random data for input '{spec.name}' of dtype "
                                    f"{spec.dtype}; supply real inputs (--inputs file.npz).")
    return feeds


def parse_shapes(text: str | Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``name:1x3x224x224[,name2:...]`` (trtexec's style) into a dict."""
    if not text:
        return {}
    items = [text] if isinstance(text, str) else list(text)
    out: dict[str, tuple[int, ...]] = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, dims = part.rpartition(":")
            if not sep or not name:
                raise InvalidInputError(f"Bad shape '{part}': write NAME:DIMxDIMx..., e.g. input:1x3x224x224.")
            try:
                out[name] = tuple(int(d) for d in dims.lower().split("x"))
            except ValueError as exc:
                raise InvalidInputError(
                    f"Bad shape '{part}': dimensions must be integers separated by 'x'.") from exc
    return out


def load_feeds(path: str) -> dict[str, np.ndarray]:
    """Read inputs from a .npz (one array per input name) or .npy (single input)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"Cannot read inputs from '{path}': {exc}. Use .npz with one array "
                                "per input name.") from exc
    if isinstance(data, np.ndarray):
        return {"": data}
    return {k: data[k] for k in data.files}


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every nested graph (If branches, Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from iter_graphs(g)


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of its nested graphs."""
    for g in iter_graphs(graph):
        yield from g.node
