"""Write a Triton-layout repository entry from one of our artifacts (``trt-edge export-triton``).

``export_triton("model.onnx", "repo", ExportTritonOptions(name="mnist"))`` writes
``repo/mnist/config.pbtxt`` and ``repo/mnist/1/model.onnx`` (plus its sidecar when it has one).
The config is completed from the model's signature (inputs, outputs, ``max_batch_size``), so it
loads in ``trt-edge serve`` and in NVIDIA Triton alike. Every file is written atomically and the
config is checked against the model before anything is written.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

from ..artifacts import atomic_path, atomic_write_text, sidecar_path
from ..errors import InvalidInputError
from . import backend
from .config import (BACKEND_OF_PLATFORM, DEFAULT_FILENAMES, PLATFORM_ONNX, PLATFORM_PLAN, DynamicBatching,
                     InstanceGroup, ModelConfig, QueuePolicy, VersionPolicy, autocomplete, format_config,
                     parse_config)
from .repository import _NAME

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ExportTritonOptions:
    """What goes into ``config.pbtxt``.

    ``max_batch_size``: None = from the model (4, Triton's auto-complete default, when it has a dynamic
    batch axis; 0 otherwise). ``dynamic_batching``: on by default for batching models.
    ``instance_kind``: KIND_CPU / KIND_GPU / KIND_AUTO (default: GPU for .plan, CPU for .onnx).
    """

    name: str
    version: int = 1
    max_batch_size: int | None = None
    dynamic_batching: bool = True
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 0
    max_queue_size: int = 0
    default_timeout_microseconds: int = 0
    instances: int = 1
    instance_kind: str | None = None
    version_policy: VersionPolicy = VersionPolicy()
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidInputError(f"model name '{self.name}' may only use letters, digits, '_', '.', '-'.")
        if self.version < 1:
            raise InvalidInputError(f"version must be >= 1, got {self.version}.")
        if self.instances < 1:
            raise InvalidInputError(f"instances must be >= 1, got {self.instances}.")
        if self.max_batch_size is not None and self.max_batch_size < 0:
            raise InvalidInputError(f"max_batch_size must be >= 0, got {self.max_batch_size}.")
        if self.instance_kind not in (None, "KIND_CPU", "KIND_GPU", "KIND_AUTO"):
            raise InvalidInputError(f"instance kind must be KIND_CPU, KIND_GPU or KIND_AUTO, got "
                                    f"{self.instance_kind}.")
        for v in (self.max_queue_delay_microseconds, self.max_queue_size, self.default_timeout_microseconds):
            if v < 0:
                raise InvalidInputError("queue delay, queue size and timeout must be >= 0.")


def _platform(artifact: Path) -> str:
    suffix = artifact.suffix.lower()
    if suffix == ".onnx":
        return PLATFORM_ONNX
    if suffix in (".plan", ".engine", ".trt"):
        return PLATFORM_PLAN
    raise InvalidInputError(f"'{artifact}': export-triton takes an .onnx model or a TensorRT engine "
                            "(.plan/.engine/.trt).")


def _check_no_external_data(artifact: Path) -> None:
    import onnx  # noqa: PLC0415 - a core dependency
    model = onnx.load(str(artifact), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise InvalidInputError(f"'{artifact}' keeps its weights in external data files; save it as one file "
                                "(onnx.save(model, path, save_as_external_data=False)) before exporting.")


def export_triton(artifact: str | os.PathLike[str], repository: str | os.PathLike[str],
                  options: ExportTritonOptions) -> Path:
    """Write ``repository/NAME/config.pbtxt`` and ``repository/NAME/VERSION/model.*``; returns the
    model folder."""
    src = Path(artifact)
    if not src.is_file():
        raise InvalidInputError(f"'{src}' does not exist; give an .onnx model or a TensorRT engine.")
    platform = _platform(src)
    if platform == PLATFORM_ONNX:
        _check_no_external_data(src)
    folder = Path(repository) / options.name
    dest = folder / str(options.version) / DEFAULT_FILENAMES[platform]
    if dest.exists() and not options.overwrite:
        raise InvalidInputError(f"'{dest}' exists; pass --overwrite to replace it or choose another --version.")
    kind = options.instance_kind or ("KIND_GPU" if platform == PLATFORM_PLAN else "KIND_CPU")
    dyn = None
    if options.dynamic_batching and options.max_batch_size != 0:
        dyn = DynamicBatching(
            preferred_batch_size=tuple(options.preferred_batch_size),
            max_queue_delay_microseconds=options.max_queue_delay_microseconds,
            default_queue_policy=QueuePolicy(max_queue_size=options.max_queue_size,
                                             default_timeout_microseconds=options.default_timeout_microseconds))
    wanted = ModelConfig(name=options.name, platform=platform, max_batch_size=options.max_batch_size,
                         instance_group=(InstanceGroup(count=options.instances, kind=kind),),
                         dynamic_batching=dyn, version_policy=options.version_policy)
    # Check against the model (loads it once) before writing anything.
    model = backend.load(src, name=options.name, version=str(options.version), instances=1,
                         backend=BACKEND_OF_PLATFORM[platform])
    try:
        cfg = autocomplete(wanted, model.signature, name=options.name, platform=platform)
    finally:
        model.close()
    if cfg.max_batch_size == 0:
        cfg = dataclasses.replace(cfg, dynamic_batching=None)
    elif options.dynamic_batching and cfg.dynamic_batching is None:
        cfg = dataclasses.replace(cfg, dynamic_batching=dyn or DynamicBatching())
    elif not options.dynamic_batching:
        cfg = dataclasses.replace(cfg, dynamic_batching=None)
    text = format_config(cfg)
    parse_config(text, source="generated config.pbtxt")  # round-trips
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    side = sidecar_path(src)
    if side.exists():
        with atomic_path(sidecar_path(dest)) as tmp:
            shutil.copyfile(side, tmp)
    atomic_write_text(folder / "config.pbtxt", text)
    log.info("wrote %s (%s, max_batch_size %s) and %s", folder / "config.pbtxt", platform, cfg.max_batch_size,
             dest)
    return folder
