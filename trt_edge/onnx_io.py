"""Model I/O description and input generation, independent of any backend."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from .errors import InvalidInputError

Dim = int | str | None


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints for fixed dims, a string or None for dynamic ones) and dtype.

    ``kind``: "tensor", or for other ONNX value types "sequence" (a list of such
    tensors), "optional" (a tensor or None), "optional_sequence" or "map"; ``dtype``
    and ``shape`` then describe the element tensors.
    """

    name: str
    shape: tuple[Dim, ...] | None  # None: rank unknown
    dtype: np.dtype
    kind: str = "tensor"

    @property
    def is_dynamic(self) -> bool:
        return self.shape is None or any(not isinstance(d, int) or d < 0 for d in self.shape)

    def describe(self) -> str:
        shape = "?" if self.shape is None else "[" + ", ".join(
            str(d) if d is not None else "?" for d in self.shape) + "]"
        text = f"{self.name}: {self.dtype.name}{shape}"
        return text if self.kind == "tensor" else f"{text} ({self.kind})"


def _np_dtype(elem_type: int) -> np.dtype:
    """NumPy dtype of an ONNX element type (ml_dtypes types for bfloat16/float8/int4, as onnx uses)."""
    if not elem_type:
        return np.dtype("float32")
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def _tensor_type_spec(name: str, tt: onnx.TypeProto.Tensor, kind: str) -> TensorSpec:
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
    return TensorSpec(name, shape, _np_dtype(tt.elem_type), kind)


def _value_info_spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    t = vi.type
    which = t.WhichOneof("value")
    if which == "sequence_type":
        return _tensor_type_spec(vi.name, t.sequence_type.elem_type.tensor_type, "sequence")
    if which == "optional_type":
        inner = t.optional_type.elem_type
        if inner.WhichOneof("value") == "sequence_type":
            return _tensor_type_spec(vi.name, inner.sequence_type.elem_type.tensor_type, "optional_sequence")
        return _tensor_type_spec(vi.name, inner.tensor_type, "optional")
    if which == "map_type":
        return TensorSpec(vi.name, None, _np_dtype(t.map_type.key_type), "map")
    return _tensor_type_spec(vi.name, t.tensor_type, "tensor")


def check_array(name: str, arr: Any, spec: TensorSpec, *, where: str = "", skip_axes: Sequence[int] = (),
                cast: Any = None) -> np.ndarray:
    """Check one input array against its spec: numeric, the model's dtype, rank and fixed dims.

    The one wording every caller (runners, CLI data checks) uses; ``where`` prefixes the message
    (e.g. the data file). ``cast(arr) -> arr | None``: a chance to convert a dtype mismatch
    (``None``: refuse it). ``skip_axes``: axes not compared (a sample axis regrouped later).
    Raises :class:`InvalidInputError` naming the input and the fix.
    """
    pre = f"{where}: input '{name}'" if where else f"Input '{name}'"
    if not isinstance(arr, np.ndarray):
        try:
            arr = np.asarray(arr)
        except Exception as exc:  # noqa: BLE001 - ragged lists and the like
            raise InvalidInputError(f"{pre} cannot be converted to an array ({exc}); pass a numpy array: "
                                    f"{spec.describe()}.") from exc
    if arr.dtype == object:
        raise InvalidInputError(f"{pre} is an object array (ragged or mixed values); pass a numeric numpy "
                                f"array: {spec.describe()}.")
    if arr.dtype != spec.dtype:
        converted = cast(arr) if cast is not None else None
        if converted is None:
            raise InvalidInputError(f"{pre} has dtype {arr.dtype} but the model expects {spec.dtype}: convert "
                                    f"it with arr.astype(np.{spec.dtype.name}).")
        arr = converted
    if spec.shape is not None:
        if arr.ndim != len(spec.shape):
            raise InvalidInputError(f"{pre} has {arr.ndim} dimensions {arr.shape} but the model expects "
                                    f"{len(spec.shape)}: {spec.describe()}.")
        for axis, (got, want) in enumerate(zip(arr.shape, spec.shape)):
            if axis not in skip_axes and isinstance(want, int) and want >= 0 and got != want:
                what = " (channels)" if where and axis == 1 and len(spec.shape) == 4 else ""
                raise InvalidInputError(f"{pre} has size {got} on axis {axis}{what} but the model requires "
                                        f"{want}: {spec.describe()} (got shape {arr.shape}).")
    return arr


def graph_inputs(model: onnx.ModelProto) -> list[TensorSpec]:
    """Real inputs: graph inputs that are not initializers (IR < 4 lists both)."""
    inits = {i.name for i in model.graph.initializer}
    return [_value_info_spec(i) for i in model.graph.input if i.name not in inits]


def graph_outputs(model: onnx.ModelProto) -> list[TensorSpec]:
    return [_value_info_spec(o) for o in model.graph.output]


def concrete_shape(spec: TensorSpec, dim_values: Mapping[str, int] | None = None,
                   default_dim: int = 1) -> tuple[int, ...]:
    """Resolve dynamic dims by name from ``dim_values`` (e.g. {"batch": 8}), else ``default_dim``.

    An unnamed dynamic dim may be given as ``"INPUT:AXIS"`` in ``dim_values``.
    """
    if spec.shape is None:
        raise InvalidInputError(f"Input '{spec.name}' has unknown rank: give its shape explicitly "
                                f"(e.g. --shapes {spec.name}:1x3x224x224).")
    dim_values = dim_values or {}
    out = []
    for axis, d in enumerate(spec.shape):
        if isinstance(d, int) and d >= 0:
            out.append(d)
        elif isinstance(d, str) and d in dim_values:
            out.append(int(dim_values[d]))
        else:
            out.append(int(dim_values.get(f"{spec.name}:{axis}", default_dim)))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Values that consumers accept. Random integers are wrong for inputs that are indices, axes or
# sizes: the *original* model fails on them. ``feed_rules`` reads each input's consumers and
# chooses values valid for them.

@dataclasses.dataclass(frozen=True)
class FeedRule:
    """How to fill one input: ``values`` (exactly these, for a 1-d input), ``fill`` (every
    element that value), ``arange`` (0, 1, 2, ...: distinct axes) or random integers in
    ``[low, high]``; ``why`` names the consumer."""

    why: str
    fill: float | int | bool | None = None
    arange: bool = False
    low: int = 0
    high: int = 0
    values: tuple[float, ...] | None = None


_I64_MAX = np.iinfo(np.int64).max
# Value-preserving ops an input may pass through before reaching the consumer that constrains it.
_PASS_THROUGH = frozenset({"Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape", "Flatten", "CastLike"})


def _shape_of(name: str, shapes: Mapping[str, tuple[Dim, ...] | None]) -> tuple[Dim, ...] | None:
    return shapes.get(name)


def _known_dim(shape: tuple[Dim, ...] | None, axis: int) -> int | None:
    if shape is None or not -len(shape) <= axis < len(shape):
        return None
    d = shape[axis]
    return d if isinstance(d, int) and d > 0 else None


def _node_attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _rule_for(node: onnx.NodeProto, index: int, shapes: Mapping[str, tuple[Dim, ...] | None],
              consts: Mapping[str, np.ndarray], integer: bool,
              own_shape: tuple[Dim, ...] | None = None) -> FeedRule | None:
    """The values input ``index`` of ``node`` must take, or None when anything goes."""
    op = node.op_type
    length = own_shape[0] if own_shape is not None and len(own_shape) == 1 and isinstance(own_shape[0], int) \
        else None
    data = node.input[0] if node.input else ""
    data_shape = _shape_of(data, shapes)
    rank = len(data_shape) if data_shape is not None else None
    why = f"{op} input {index}"
    if op in ("Gather", "GatherElements", "ScatterElements", "TakeAlongAxis") and index == 1 \
            and integer:
        axis = int(_node_attr(node, "axis", 0))  # type: ignore[arg-type]
        n = _known_dim(data_shape, axis) or 1
        return FeedRule(why, low=0, high=min(n, 100) - 1)
    if op in ("GatherND", "ScatterND") and index == 1 and integer:
        dims = [d for d in (data_shape or ()) if isinstance(d, int) and d > 0]
        n = min(dims) if dims and data_shape is not None and len(dims) == len(data_shape) else 1
        return FeedRule(why, low=0, high=n - 1)
    if op == "OneHot":
        return FeedRule(why, low=0, high=1) if index == 0 else FeedRule(why, fill=3) if index == 1 else None
    if op == "AffineGrid" and index == 1 and length:
        n = _known_dim(data_shape, 0) or 1
        return FeedRule(why, values=(n, 1) + (3,) * (length - 2))
    if op in ("NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss") and index == 1:
        n = _known_dim(data_shape, 1) or 1
        return FeedRule(why, low=0, high=n - 1)
    if op in ("Split", "SplitToSequence") and index == 1 and length:
        axis = int(_node_attr(node, "axis", 0))  # type: ignore[arg-type]
        d = _known_dim(data_shape, axis)
        if d is not None and d >= length:
            parts = [float(d // length)] * length
            parts[-1] += d - sum(parts)
            return FeedRule(why, values=tuple(parts))
    if op in ("CumSum", "CumProd") and index == 1:
        return FeedRule(why, low=0, high=(rank or 1) - 1)
    if op in ("Unsqueeze", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
              "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare") and index == 1:
        return FeedRule(why, arange=True)
    if op == "Squeeze" and index == 1:
        ones = [i for i, d in enumerate(data_shape or ()) if d == 1]
        return FeedRule(why, fill=ones[0] if ones else 0)
    if op == "Slice":
        return {1: FeedRule(why, fill=0), 2: FeedRule(why, fill=_I64_MAX if integer else None),
                3: FeedRule(why, arange=True), 4: FeedRule(why, fill=1)}.get(index)
    if op == "Pad":
        if index == 1 and rank and length == 2 * rank and data_shape is not None:
            # 1 where the axis is known to be long enough for reflect/edge modes, else 0
            pad = tuple(1.0 if isinstance(d, int) and d >= 2 else 0.0 for d in data_shape)
            return FeedRule(why, values=pad + pad)
        return {1: FeedRule(why, fill=0), 3: FeedRule(why, arange=True)}.get(index)
    if op == "Reshape" and index == 1:
        if int(_node_attr(node, "allowzero", 0)) != 0 or not length:  # type: ignore[arg-type]
            return None
        r = rank if rank else 1
        if length <= r:  # copy the leading dims, flatten the rest
            return FeedRule(why, values=(0,) * (length - 1) + (-1,))
        return FeedRule(why, values=(0,) * (r - 1) + (-1,) + (1,) * (length - r))
    if op == "Col2Im" and index in (1, 2) and length:
        blocks = _known_dim(data_shape, 2)
        if index == 2:
            return FeedRule(why, fill=1)
        if blocks is not None:  # block 1x1..: one block per image position
            return FeedRule(why, values=(blocks,) + (1,) * (length - 1))
    if op in ("Expand",) and index == 1:
        return FeedRule(why, fill=1)
    if op == "Tile" and index == 1:
        return FeedRule(why, low=1, high=2)
    if op == "ConstantOfShape" and index == 0:
        return FeedRule(why, low=1, high=3)
    if op == "TopK" and index == 1:
        return FeedRule(why, fill=1)
    if op == "Range":
        return {0: FeedRule(why, low=0, high=3), 1: FeedRule(why, low=4, high=8),
                2: FeedRule(why, fill=1)}.get(index)
    if op in ("Resize", "Upsample") and index == (2 if op == "Resize" else 1) and not integer:
        if length and length >= 3:  # keep N and C: most modes scale the spatial axes only
            return FeedRule(why, values=(1.0,) * (length - 2) + (2.0, 2.0))
        return FeedRule(why, fill=2.0)
    if op in ("Div", "Mod") and index == 1 and integer:
        return FeedRule(why, low=1, high=9)
    if op == "Pow" and index == 1 and integer:
        return FeedRule(why, low=0, high=3)
    if op == "BitShift" and index == 1:
        return FeedRule(why, low=0, high=3)
    if op == "Trilu" and index == 1:
        return FeedRule(why, low=-1, high=1)
    if op == "ReverseSequence" and index == 1:
        return FeedRule(why, fill=1)
    if op == "RoiAlign" and index == 2:
        return FeedRule(why, fill=0)
    if op == "NonMaxSuppression":
        return {2: FeedRule(why, low=1, high=5), 3: FeedRule(why, fill=0.5), 4: FeedRule(why, fill=0.0)}.get(index)
    if op in ("LSTM", "GRU", "RNN") and index == 4:
        return FeedRule(why, fill=1)
    if op == "Loop":
        return {0: FeedRule(why, low=1, high=3), 1: FeedRule(why, fill=True)}.get(index)
    if op == "STFT" and index == 1:
        return FeedRule(why, fill=2)
    if op in ("Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual") and len(node.input) == 2:
        other = consts.get(node.input[1 - index])
        if other is not None and other.size and np.issubdtype(other.dtype, np.number):
            # A branch selector (silero-vad: sr == 16000): take the value the model tests for.
            return FeedRule(f"{why} (compared with {other.reshape(-1)[0]!r})", fill=other.reshape(-1)[0].item())
    return None


def _constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    from onnx import numpy_helper
    out: dict[str, np.ndarray] = {}
    for t in graph.initializer:
        if t.ByteSize() < 4096:
            out[t.name] = numpy_helper.to_array(t)
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value" and a.t.ByteSize() < 4096:
                    out[node.output[0]] = numpy_helper.to_array(a.t)
                elif a.name in ("value_int", "value_float"):
                    out[node.output[0]] = np.asarray(helper.get_attribute_value(a))
    return out


def feed_rules(model: onnx.ModelProto) -> dict[str, FeedRule]:
    """For each graph input whose consumers need particular values: the rule to fill it.

    Looks through value-preserving ops (Cast, Identity, Squeeze/Unsqueeze, Reshape) and into
    nested graphs that read the input from the outer scope. The first constraining consumer wins.
    """
    graphs = list(iter_graphs(model.graph))
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    consts: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple[Dim, ...] | None] = {}
    for g in graphs:
        consts.update(_constant_values(g))
        for vi in [*g.input, *g.value_info, *g.output]:
            if vi.type.WhichOneof("value") == "tensor_type":
                shapes[vi.name] = _value_info_spec(vi).shape
        for t in g.initializer:
            shapes.setdefault(t.name, tuple(int(d) for d in t.dims))
        for node in g.node:
            for i, name in enumerate(node.input):
                if name:
                    consumers.setdefault(name, []).append((node, i))
    rules: dict[str, FeedRule] = {}
    for spec in graph_inputs(model):
        integer = np.issubdtype(spec.dtype, np.integer)
        seen: set[str] = set()
        todo = [spec.name]
        while todo and spec.name not in rules:
            name = todo.pop(0)
            if name in seen:
                continue
            seen.add(name)
            for node, index in consumers.get(name, []):
                rule = _rule_for(node, index, shapes, consts, integer, spec.shape)
                if rule is not None:
                    rules[spec.name] = rule
                    break
                if node.op_type in _PASS_THROUGH and index == 0:
                    todo.extend(o for o in node.output if o)
    return rules


def _rng_fill(rng: np.random.Generator, spec: TensorSpec, shape: tuple[int, ...], rule: FeedRule | None,
              int_high: int) -> np.ndarray:
    dtype = spec.dtype
    is_float = dtype.kind == "f" or (dtype.kind == "V" and _ml_kind(dtype) == "f")
    is_int = np.issubdtype(dtype, np.integer) or (dtype.kind == "V" and _ml_kind(dtype) == "i")
    if rule is not None and rule.values is not None and shape == (len(rule.values),):
        return np.asarray(rule.values).astype(dtype)
    if rule is not None and (rule.fill is not None or rule.arange or rule.high >= rule.low):
        if rule.arange:
            n = int(np.prod(shape, dtype=np.int64))
            return np.arange(n).reshape(shape).astype(dtype)
        if rule.fill is not None:
            value = rule.fill
            if is_int or dtype == np.bool_:
                value = int(min(max(int(value), _int_min(dtype)), _int_max(dtype)))
            return np.full(shape, value).astype(dtype)
        return rng.integers(rule.low, rule.high + 1, shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if is_float:
        values = rng.standard_normal(shape).astype(np.float32)
        return values.astype(dtype)
    if is_int:
        if "mask" in spec.name.lower():
            return np.ones(shape, dtype=dtype)
        if "type" in spec.name.lower():
            return np.zeros(shape, dtype=dtype)
        high = min(int_high, _int_max(dtype) + 1)
        low = max(0, _int_min(dtype))
        return rng.integers(low, high, shape).astype(dtype)
    if dtype.kind in ("U", "S", "O"):
        words = np.array(["monday", "tuesday", "robot", "edge", "Onnx", ""], dtype=object)
        return np.asarray(words[rng.integers(0, len(words), shape)], dtype=object).reshape(shape)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    raise InvalidInputError(f"Cannot generate random data for input '{spec.name}' of dtype "
                            f"{dtype}; supply real inputs (--inputs file.npz).")


def _ml_kind(dtype: np.dtype) -> str:
    """'f' or 'i' for ml_dtypes' extension types (bfloat16, float8_*, int4, uint4...)."""
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - onnx depends on ml_dtypes
        return ""
    try:
        ml_dtypes.finfo(dtype)
        return "f"
    except (TypeError, ValueError):
        pass
    try:
        ml_dtypes.iinfo(dtype)
        return "i"
    except (TypeError, ValueError):
        return ""


def _int_max(dtype: np.dtype) -> int:
    if dtype == np.bool_:
        return 1
    if np.issubdtype(dtype, np.integer):
        return int(np.iinfo(dtype).max)
    import ml_dtypes
    return int(ml_dtypes.iinfo(dtype).max)


def _int_min(dtype: np.dtype) -> int:
    if dtype == np.bool_:
        return 0
    if np.issubdtype(dtype, np.integer):
        return int(np.iinfo(dtype).min)
    import ml_dtypes
    return int(ml_dtypes.iinfo(dtype).min)


def random_inputs(specs: Sequence[TensorSpec], shapes: Mapping[str, Sequence[int]] | None = None,
                  dim_values: Mapping[str, int] | None = None, seed: int = 0,
                  int_high: int = 100, rules: Mapping[str, FeedRule] | None = None,
                  values: Mapping[str, object] | None = None, default_dim: int = 1) -> dict[str, object]:
    """Random feeds for every ONNX input type ONNX Runtime takes.

    Floats (float16/32/64 and, as ml_dtypes arrays, bfloat16/float8) are standard
    normal; bools random; integers (int4..int64) small and non-negative, or as
    ``rules`` (from :func:`feed_rules`) say for inputs that are indices, axes or sizes;
    strings from a small vocabulary; sequences get two tensors, optionals one.
    Integer inputs named like attention masks get ones (zeros would mask everything)
    and ``*type*`` ids zeros. ``values``: a fixed value per input (``{"sr": 16000}``),
    broadcast to its shape (0-d for a scalar input). ``shapes`` overrides a whole shape,
    ``dim_values`` names dynamic dims (``"INPUT:AXIS"`` for unnamed ones), others get
    ``default_dim``.
    """
    rng = np.random.default_rng(seed)
    shapes = shapes or {}
    rules = rules or {}
    values = values or {}
    feeds: dict[str, object] = {}
    for spec in specs:
        if spec.kind == "map":
            raise InvalidInputError(f"Cannot generate data for map input '{spec.name}'; supply real "
                                    "inputs (--inputs file.npz).")
        if spec.name in shapes:
            shape = tuple(int(d) for d in shapes[spec.name])
        elif spec.name in values and spec.shape is None:
            shape = np.asarray(values[spec.name]).shape
        elif spec.shape is None and spec.kind != "tensor":
            shape = (3,)  # elements of a sequence/optional of unknown rank: small vectors
        else:
            shape = concrete_shape(spec, dim_values, default_dim)
        if spec.name in values:
            # np.array (not ascontiguousarray, which makes a 0-d value 1-d) keeps scalars scalar
            value: object = np.array(np.broadcast_to(np.asarray(values[spec.name]), shape), dtype=spec.dtype)
        elif spec.kind in ("sequence", "optional_sequence"):
            value = [_rng_fill(rng, spec, shape, rules.get(spec.name), int_high) for _ in range(2)]
        else:
            value = _rng_fill(rng, spec, shape, rules.get(spec.name), int_high)
        feeds[spec.name] = value
    return feeds


@dataclasses.dataclass(frozen=True)
class InputSpecs:
    """What ``--shapes`` says: a shape per input, and fixed values for some (``sr=16000``)."""

    shapes: dict[str, tuple[int, ...]]
    values: dict[str, int | float]


def parse_input_specs(text: str | Sequence[str] | None) -> InputSpecs:
    """Parse ``name:1x3x224x224``, ``name:scalar`` (0-d) and ``name=VALUE`` items, comma-separated.

    ``name:`` (nothing after the colon) is a 0-d shape too; ``name=16000`` gives a scalar
    input that value (and shape ``()`` unless a shape is also given). Dims must be >= 0.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    vals: dict[str, int | float] = {}
    if not text:
        return InputSpecs(shapes, vals)
    items = [text] if isinstance(text, str) else list(text)
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            if "=" in part:
                name, _, raw = part.rpartition("=")
                name = name.strip()
                if not name:
                    raise InvalidInputError(f"Bad input value '{part}': write NAME=VALUE, e.g. sr=16000.")
                try:
                    vals[name] = int(raw)
                except ValueError:
                    try:
                        vals[name] = float(raw)
                    except ValueError as exc:
                        raise InvalidInputError(f"Bad input value '{part}': the value must be a number, "
                                                "e.g. sr=16000.") from exc
                shapes.setdefault(name, ())
                continue
            name, sep, dims = part.rpartition(":")
            if not sep or not name:
                raise InvalidInputError(f"Bad shape '{part}': write NAME:DIMxDIMx..., e.g. input:1x3x224x224 "
                                        "(NAME:scalar for a 0-d input, NAME=VALUE for a value).")
            dims = dims.strip().lower()
            if dims in ("", "scalar"):
                shapes[name] = ()
                continue
            try:
                parsed = tuple(int(d) for d in dims.split("x"))
            except ValueError as exc:
                raise InvalidInputError(
                    f"Bad shape '{part}': dimensions must be integers separated by 'x' "
                    "(NAME:scalar for a 0-d input).") from exc
            if any(d < 0 for d in parsed):
                raise InvalidInputError(f"Bad shape '{part}': dimensions must be >= 0 (a concrete size, "
                                        "not -1 for 'dynamic'), e.g. input:1x3x224x224.")
            shapes[name] = parsed
    return InputSpecs(shapes, vals)


def parse_shapes(text: str | Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``name:1x3x224x224[,name2:...]`` (trtexec's style) into a dict.

    ``name:scalar`` (or ``name:``) is a 0-d input; negative dims are refused. Values
    (``name=16000``) are accepted and give shape ``()``; :func:`parse_input_specs` returns them.
    """
    return parse_input_specs(text).shapes


def load_feeds(path: str) -> dict[str, np.ndarray]:
    """Read inputs from a .npz (one array per input name) or .npy (single input)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # EOFError: a 0-byte file
        raise InvalidInputError(f"Cannot read inputs from '{path}': {exc or 'the file is empty'}. Use .npz with one array "
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
