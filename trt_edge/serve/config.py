"""``config.pbtxt``: Triton's model configuration, read and written with Triton's field names.

The file is protobuf text format of Triton's ``inference.ModelConfig``. We parse it with the
protobuf library into a message type (:mod:`.pbtxt`) with the same field and enum names as Triton
(the subset the service acts on), so a file we write loads in Triton unchanged and a Triton file
loads here; fields this service does not act on (``optimization``, ``model_warmup``, ...) are
skipped with a warning naming them. Only the text and JSON forms are used; the binary wire form
of this message is not Triton's.

:func:`autocomplete` fills in what the file leaves out from the artifact's signature, as
Triton's auto-complete does: ``platform``, ``max_batch_size`` (4 when the model has a dynamic batch
axis and the file does not say, and then dynamic batching on), ``input``/``output``.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

import numpy as np

from ..errors import ArtifactError, InvalidInputError
from .backend import ServedSignature
from .pbtxt import DATA_TYPES, message_class, strip_unknown_fields

log = logging.getLogger(__name__)

PLATFORM_ONNX = "onnxruntime_onnx"
PLATFORM_PLAN = "tensorrt_plan"
DEFAULT_FILENAMES = {PLATFORM_ONNX: "model.onnx", PLATFORM_PLAN: "model.plan"}
BACKEND_OF_PLATFORM = {PLATFORM_ONNX: "onnxruntime", PLATFORM_PLAN: "tensorrt"}
DEFAULT_MAX_BATCH_SIZE = 4   # Triton's default-max-batch-size for auto-completed configs

_NP_OF_TYPE = {"TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8, "TYPE_UINT16": np.uint16,
               "TYPE_UINT32": np.uint32, "TYPE_UINT64": np.uint64, "TYPE_INT8": np.int8,
               "TYPE_INT16": np.int16, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64,
               "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
               "TYPE_STRING": np.object_}


def np_dtype_of(data_type: str) -> np.dtype:
    try:
        return np.dtype(_NP_OF_TYPE[data_type])
    except KeyError:
        raise InvalidInputError(f"data_type {data_type} is not supported by trt-edge serve; use one of "
                                f"{', '.join(sorted(_NP_OF_TYPE))}.") from None


def data_type_of(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    for name, t in _NP_OF_TYPE.items():
        if np.dtype(t) == dtype:
            return name
    raise InvalidInputError(f"numpy dtype {dtype} has no Triton data_type.")


def wire_datatype(data_type: str) -> str:
    """TYPE_FP32 -> FP32, TYPE_STRING -> BYTES (the protocol's names)."""
    return "BYTES" if data_type == "TYPE_STRING" else data_type[len("TYPE_"):]


# ---- typed configuration --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TensorConfig:
    name: str
    data_type: str                       # TYPE_FP32 ...
    dims: tuple[int, ...]                # without the batch axis when max_batch_size > 0; -1 dynamic
    reshape: tuple[int, ...] | None = None
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class InstanceGroup:
    count: int = 1
    kind: str = "KIND_AUTO"              # KIND_AUTO | KIND_GPU | KIND_CPU | KIND_MODEL
    gpus: tuple[int, ...] = ()
    name: str = ""


@dataclasses.dataclass(frozen=True)
class QueuePolicy:
    timeout_action: str = "REJECT"       # REJECT | DELAY
    default_timeout_microseconds: int = 0
    allow_timeout_override: bool = False
    max_queue_size: int = 0              # 0: unbounded


@dataclasses.dataclass(frozen=True)
class DynamicBatching:
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 0
    preserve_ordering: bool = False
    default_queue_policy: QueuePolicy = QueuePolicy()


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    kind: str = "latest"                 # latest | all | specific
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The versions to load from those on disk (ascending)."""
        got = sorted(available)
        if self.kind == "all":
            return got
        if self.kind == "specific":
            return [v for v in got if v in set(self.versions)]
        return got[-self.num_versions:] if self.num_versions > 0 else []


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = ""
    platform: str = ""
    backend: str = ""
    max_batch_size: int | None = None    # None: not given (auto-complete decides)
    input: tuple[TensorConfig, ...] = ()
    output: tuple[TensorConfig, ...] = ()
    instance_group: tuple[InstanceGroup, ...] = ()
    dynamic_batching: DynamicBatching | None = None
    version_policy: VersionPolicy = VersionPolicy()
    default_model_filename: str = ""
    parameters: tuple[tuple[str, str], ...] = ()

    @property
    def instance_count(self) -> int:
        return max(1, sum(g.count for g in self.instance_group)) if self.instance_group else 1

    @property
    def batching(self) -> bool:
        return bool(self.max_batch_size)

    def model_filename(self) -> str:
        return self.default_model_filename or DEFAULT_FILENAMES.get(self.platform, "model.onnx")


def parse_config(text: str, *, source: str = "config.pbtxt") -> ModelConfig:
    """Parse ``config.pbtxt`` text; raises :class:`ArtifactError` naming the file and the problem."""
    from google.protobuf import text_format  # noqa: PLC0415
    cls = message_class()
    msg = cls()
    known, ignored = strip_unknown_fields(text, {f.name for f in cls.DESCRIPTOR.fields})
    try:
        text_format.Parse(known, msg, allow_unknown_field=True)
    except text_format.ParseError as exc:
        raise ArtifactError(f"{source}: not a valid Triton model configuration ({exc}). Fix the "
                            "protobuf text (field names as in Triton's model_config.proto).") from exc
    if ignored:
        log.warning("%s: fields %s are not used by trt-edge serve (Triton still reads them).",
                    source, ignored)
    has_mbs = re.search(r"^\s*max_batch_size\s*:", text, re.M) is not None
    return _from_message(msg, has_max_batch_size=has_mbs)


def _tensor(t: Any, kind: str) -> TensorConfig:
    dt = DATA_TYPES[t.data_type]
    return TensorConfig(name=t.name, data_type=dt, dims=tuple(int(d) for d in t.dims),
                        reshape=tuple(int(d) for d in t.reshape.shape) if t.HasField("reshape") else None,
                        optional=bool(getattr(t, "optional", False)) if kind == "input" else False)


def _from_message(msg: Any, *, has_max_batch_size: bool) -> ModelConfig:
    vp = VersionPolicy()
    choice = msg.version_policy.WhichOneof("policy_choice") if msg.HasField("version_policy") else None
    if choice == "all":
        vp = VersionPolicy(kind="all")
    elif choice == "specific":
        vp = VersionPolicy(kind="specific", versions=tuple(int(v) for v in msg.version_policy.specific.versions))
    elif choice == "latest":
        vp = VersionPolicy(kind="latest", num_versions=int(msg.version_policy.latest.num_versions))
    db = None
    if msg.HasField("dynamic_batching"):
        d = msg.dynamic_batching
        q = d.default_queue_policy
        db = DynamicBatching(
            preferred_batch_size=tuple(int(x) for x in d.preferred_batch_size),
            max_queue_delay_microseconds=int(d.max_queue_delay_microseconds),
            preserve_ordering=bool(d.preserve_ordering),
            default_queue_policy=QueuePolicy(
                timeout_action=q.DESCRIPTOR.fields_by_name["timeout_action"].enum_type
                .values_by_number[q.timeout_action].name,
                default_timeout_microseconds=int(q.default_timeout_microseconds),
                allow_timeout_override=bool(q.allow_timeout_override),
                max_queue_size=int(q.max_queue_size)))
    kinds = ("KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL")
    return ModelConfig(
        name=msg.name, platform=msg.platform, backend=msg.backend,
        max_batch_size=int(msg.max_batch_size) if has_max_batch_size else None,
        input=tuple(_tensor(t, "input") for t in msg.input),
        output=tuple(_tensor(t, "output") for t in msg.output),
        instance_group=tuple(InstanceGroup(count=int(g.count) if g.count else 1, kind=kinds[g.kind],
                                           gpus=tuple(int(x) for x in g.gpus), name=g.name)
                             for g in msg.instance_group),
        dynamic_batching=db, version_policy=vp, default_model_filename=msg.default_model_filename,
        parameters=tuple(sorted((k, v.string_value) for k, v in msg.parameters.items())))


def _to_message(cfg: ModelConfig) -> Any:
    msg = message_class()()
    msg.name = cfg.name
    if cfg.platform:
        msg.platform = cfg.platform
    if cfg.backend:
        msg.backend = cfg.backend
    if cfg.version_policy != VersionPolicy():
        vp = cfg.version_policy
        if vp.kind == "all":
            msg.version_policy.all.SetInParent()
        elif vp.kind == "specific":
            msg.version_policy.specific.versions.extend(vp.versions)
        else:
            msg.version_policy.latest.num_versions = vp.num_versions
    msg.max_batch_size = int(cfg.max_batch_size or 0)
    for kind, tensors in (("input", cfg.input), ("output", cfg.output)):
        for t in tensors:
            m = getattr(msg, kind).add(name=t.name, data_type=DATA_TYPES.index(t.data_type))
            m.dims.extend(t.dims)
            if t.reshape is not None:
                m.reshape.shape.extend(t.reshape)
            if kind == "input" and t.optional:
                m.optional = True
    for g in cfg.instance_group:
        m = msg.instance_group.add(count=g.count)
        m.kind = ("KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL").index(g.kind)
        if g.name:
            m.name = g.name
        m.gpus.extend(g.gpus)
    if cfg.default_model_filename:
        msg.default_model_filename = cfg.default_model_filename
    if cfg.dynamic_batching is not None:
        d, q = cfg.dynamic_batching, cfg.dynamic_batching.default_queue_policy
        msg.dynamic_batching.SetInParent()
        msg.dynamic_batching.preferred_batch_size.extend(d.preferred_batch_size)
        msg.dynamic_batching.max_queue_delay_microseconds = d.max_queue_delay_microseconds
        msg.dynamic_batching.preserve_ordering = d.preserve_ordering
        if q != QueuePolicy():
            p = msg.dynamic_batching.default_queue_policy
            p.timeout_action = ("REJECT", "DELAY").index(q.timeout_action)
            p.default_timeout_microseconds = q.default_timeout_microseconds
            p.allow_timeout_override = q.allow_timeout_override
            p.max_queue_size = q.max_queue_size
    for k, v in cfg.parameters:
        msg.parameters[k].string_value = v
    return msg


def format_config(cfg: ModelConfig) -> str:
    """``config.pbtxt`` text for ``cfg`` (parses into Triton's own ModelConfig)."""
    from google.protobuf import text_format  # noqa: PLC0415
    return text_format.MessageToString(_to_message(cfg))


def config_json(cfg: ModelConfig) -> dict[str, Any]:
    """The configuration as ``GET /v2/models/{m}/config`` returns it (Triton's JSON field names)."""
    from google.protobuf import json_format  # noqa: PLC0415
    out = json_format.MessageToDict(_to_message(cfg), preserving_proto_field_name=True,
                                    always_print_fields_with_no_presence=True)

    def ints(obj: Any) -> Any:  # protobuf's JSON writes int64 as strings; Triton writes numbers
        if isinstance(obj, dict):
            return {k: ints(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [ints(v) for v in obj]
        if isinstance(obj, str) and re.fullmatch(r"-?\d+", obj):
            return int(obj)
        return obj

    return {k: ints(v) if k not in ("name", "platform", "backend", "default_model_filename", "parameters")
            else v for k, v in out.items()}


# ---- auto-complete from the artifact's signature -----------------------------------------------

def autocomplete(cfg: ModelConfig, sig: ServedSignature, *, name: str, platform: str) -> ModelConfig:
    """Fill what ``cfg`` leaves out from the signature, and check what it says against it.

    Raises :class:`ArtifactError` when the file contradicts the model (names, types, dims, a batch
    size above the model's limit).
    """
    where = f"model '{name}' config.pbtxt"
    if cfg.name and cfg.name != name:
        raise ArtifactError(f"{where}: name '{cfg.name}' does not match the folder name '{name}'; Triton "
                            "requires them to agree: rename the folder or fix `name`.")
    if cfg.platform and cfg.platform != platform:
        raise ArtifactError(f"{where}: platform '{cfg.platform}' but the model file is {platform}; fix "
                            f"`platform` (or default_model_filename).")
    mbs = cfg.max_batch_size
    batching_possible = sig.batchable
    if mbs is None:
        mbs = DEFAULT_MAX_BATCH_SIZE if batching_possible else 0
        if batching_possible and sig.batch_max is not None:
            mbs = min(mbs, sig.batch_max)
    if mbs < 0:
        raise ArtifactError(f"{where}: max_batch_size must be >= 0, got {mbs}.")
    if mbs > 0 and not batching_possible:
        raise ArtifactError(f"{where}: max_batch_size {mbs} but the model has no dynamic batch axis 0 "
                            "on every input and output; set max_batch_size: 0 and give full dims.")
    if mbs > 0 and sig.batch_max is not None and mbs > sig.batch_max:
        raise ArtifactError(f"{where}: max_batch_size {mbs} exceeds the model's largest batch "
                            f"{sig.batch_max}; lower max_batch_size (or rebuild with a larger profile).")
    dyn_batching = cfg.dynamic_batching
    if cfg.max_batch_size is None and mbs > 0 and dyn_batching is None:
        dyn_batching = DynamicBatching()  # auto-complete enables it, as Triton's does

    def complete(given: tuple[TensorConfig, ...], tensors: tuple, kind: str) -> tuple[TensorConfig, ...]:
        by_name = {t.name: t for t in tensors}
        out = []
        for t in tensors:
            dims = t.shape[1:] if mbs > 0 else t.shape
            out.append(TensorConfig(t.name, data_type_of(t.dtype), tuple(int(d) for d in dims)))
        if not given:
            return tuple(out)
        auto = {t.name: t for t in out}
        result = []
        for g in given:
            if g.name not in by_name:
                raise ArtifactError(f"{where}: {kind} '{g.name}' is not an {kind} of the model (it has "
                                    f"{sorted(by_name)}); fix the name.")
            a = auto[g.name]
            if g.data_type != a.data_type:
                raise ArtifactError(f"{where}: {kind} '{g.name}' data_type {g.data_type} but the model "
                                    f"has {a.data_type}.")
            if g.reshape is None and len(g.dims) != len(a.dims):
                raise ArtifactError(f"{where}: {kind} '{g.name}' dims {list(g.dims)} but the model has "
                                    f"{list(a.dims)} ({'without' if mbs else 'with'} the batch axis, "
                                    f"since max_batch_size is {mbs}).")
            if g.reshape is None:
                for gd, ad in zip(g.dims, a.dims):
                    if ad != -1 and gd != ad:
                        raise ArtifactError(f"{where}: {kind} '{g.name}' dims {list(g.dims)} do not "
                                            f"match the model's {list(a.dims)}.")
            result.append(g)
        if kind == "input":
            missing = sorted(set(by_name) - {g.name for g in given})
            if missing:
                raise ArtifactError(f"{where}: inputs {missing} of the model are not in the config; "
                                    "list every input (or none, to auto-complete them).")
        else:
            result += [a for n, a in auto.items() if n not in {g.name for g in given}]
        return tuple(result)

    inputs = complete(cfg.input, sig.inputs, "input")
    outputs = complete(cfg.output, sig.outputs, "output")
    for g in cfg.instance_group:
        if g.count < 1:
            raise ArtifactError(f"{where}: instance_group count must be >= 1, got {g.count}.")
    if dyn_batching is not None and mbs > 0:
        bad = [p for p in dyn_batching.preferred_batch_size if not 0 < p <= mbs]
        if bad:
            raise ArtifactError(f"{where}: preferred_batch_size {bad} must be within 1..max_batch_size "
                                f"({mbs}).")
    return dataclasses.replace(cfg, name=name, platform=platform, max_batch_size=mbs, input=inputs,
                               output=outputs, dynamic_batching=dyn_batching if mbs > 0 else None)
