"""torch.nn.Module -> ONNX, with named I/O, dynamic axes and verification."""
from __future__ import annotations

import dataclasses
import io
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from .._lazy import require
from ..artifacts import model_hash, save_onnx, write_sidecar
from ..errors import ExportError, InvalidInputError, VerificationError
from ..numerics import ComparisonReport, compare_outputs
from .options import ExportOptions

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ExportResult:
    path: Path
    model: onnx.ModelProto
    input_names: list[str]
    output_names: list[str]
    exporter: str
    opset: int
    seconds: float
    verification: list[tuple[dict[str, tuple[int, ...]], ComparisonReport]]

    @property
    def verified(self) -> bool:
        return bool(self.verification) and all(r.passed for _, r in self.verification)


def _as_tuple(sample_inputs: Any) -> tuple[Any, ...]:
    if isinstance(sample_inputs, tuple):
        return sample_inputs
    if isinstance(sample_inputs, list):
        return tuple(sample_inputs)
    return (sample_inputs,)


def _to_numpy_feed(names: Sequence[str], args: Sequence[Any]) -> dict[str, np.ndarray]:
    return {n: a.detach().cpu().numpy() for n, a in zip(names, args)}


def _default_dynamic_axes(input_names: Sequence[str], output_names: Sequence[str],
                          args: Sequence[Any]) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for name, arg in zip(input_names, args):
        if getattr(arg, "ndim", 0) >= 1:
            axes[name] = {0: "batch"}
    for name in output_names:
        axes[name] = {0: "batch"}
    return axes


def _resize_axis(arr: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Grow (cycling real rows) or shrink ``arr`` along ``axis``: keeps real data real."""
    idx = np.arange(size) % arr.shape[axis]
    return np.take(arr, idx, axis=axis)


def _torch_outputs(module: Any, torch: Any, feed: Mapping[str, np.ndarray], input_names: Sequence[str],
                   output_names: Sequence[str]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = module(*[torch.from_numpy(np.ascontiguousarray(feed[n])) for n in input_names])
    outs = out if isinstance(out, (tuple, list)) else (out,)
    if isinstance(out, Mapping):
        outs = tuple(out.values())
    if len(outs) != len(output_names):
        raise ExportError(f"The module returned {len(outs)} outputs but {len(output_names)} output names "
                          f"were given ({list(output_names)}); pass one name per output.")
    return {n: o.detach().cpu().numpy() for n, o in zip(output_names, outs)}


def verification_feeds(sample: dict[str, np.ndarray], dynamic_axes: Mapping[str, Mapping[int, str]],
                       batch_sizes: tuple[int, int] | None) -> list[dict[str, np.ndarray]]:
    """The sample itself, plus the sample resized along every dynamic axis.

    Batch goes to ``batch_sizes[1]`` (default: sample batch + 2); any other
    dynamic axis (e.g. sequence length) shrinks by a quarter, so both the batch
    and the sequence dimension are exercised at a second value.
    """
    feeds = [sample]
    second: dict[str, np.ndarray] = {}
    for name, arr in sample.items():
        new = arr
        for axis, dim in sorted(dynamic_axes.get(name, {}).items()):
            if axis >= arr.ndim:
                continue
            if dim == "batch" or axis == 0:
                target = batch_sizes[1] if batch_sizes else arr.shape[axis] + 2
            else:
                target = max(1, arr.shape[axis] - max(1, arr.shape[axis] // 4))
            new = _resize_axis(new, axis, target)
        second[name] = np.ascontiguousarray(new)
    if any(second[n].shape != sample[n].shape for n in sample):
        feeds.append(second)
    return feeds


def export_onnx(module: Any, sample_inputs: Any, path: str | os.PathLike[str],
                options: ExportOptions | None = None) -> ExportResult:
    """Export ``module`` called on ``sample_inputs`` to ``path`` and verify it.

    The file is written atomically, with a sidecar recording the options, tool
    versions and the hash of the module's parameters. On a verification
    mismatch a :class:`VerificationError` with per-output figures is raised and
    no file is left behind.
    """
    opts = options or ExportOptions()
    torch = require("torch", "exporting PyTorch models")
    args = _as_tuple(sample_inputs)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise InvalidInputError("sample_inputs must be a tensor or a tuple of tensors, one per forward() "
                                "argument, e.g. torch.randn(1, 3, 224, 224).")
    input_names = list(opts.input_names or [f"input_{i}" if len(args) > 1 else "input"
                                            for i in range(len(args))])
    if len(input_names) != len(args):
        raise InvalidInputError(f"{len(input_names)} input names for {len(args)} sample inputs.")
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            probe = module(*args)
        n_out = len(probe) if isinstance(probe, (tuple, list)) else 1
        output_names = list(opts.output_names or (["output"] if n_out == 1 else
                                                  [f"output_{i}" for i in range(n_out)]))
        if len(output_names) != n_out:
            raise InvalidInputError(f"{len(output_names)} output names for {n_out} module outputs.")
        dynamic_axes = {k: dict(v) for k, v in (opts.dynamic_axes or (
            _default_dynamic_axes(input_names, output_names, args) if opts.dynamic_batch else {})).items()}
        model, seconds = _run_exporter(module, args, input_names, output_names, dynamic_axes, opts, torch)
        verification: list[tuple[dict[str, tuple[int, ...]], ComparisonReport]] = []
        if opts.verify:
            verification = _verify(module, torch, model, _to_numpy_feed(input_names, args), input_names,
                                   output_names, dynamic_axes, opts)
    finally:
        module.train(was_training)
    dest = save_onnx(model, path, external_data=opts.external_data)
    params_hash = _parameters_hash(module)
    write_sidecar(dest, "onnx-export", sources={"torch_parameters": f"sha256:{params_hash}"},
                  options=opts, extra={
                      "module": type(module).__qualname__,
                      "input_names": input_names, "output_names": output_names,
                      "dynamic_axes": dynamic_axes, "export_seconds": seconds,
                      "verification": [{"shapes": s, "passed": r.passed,
                                        "outputs": [dataclasses.asdict(o) for o in r.outputs]}
                                       for s, r in verification]})
    log.info("exported %s with the %s exporter (opset %d) in %.1fs -> %s", type(module).__name__,
             opts.exporter, opts.opset, seconds, dest)
    return ExportResult(dest, model, input_names, output_names, opts.exporter, opts.opset, seconds,
                        verification)


def _parameters_hash(module: Any) -> str:
    import hashlib
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _run_exporter(module: Any, args: tuple[Any, ...], input_names: list[str], output_names: list[str],
                  dynamic_axes: dict[str, dict[int, str]], opts: ExportOptions, torch: Any
                  ) -> tuple[onnx.ModelProto, float]:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trt_edge_export_") as tmp:
        tmp_path = Path(tmp) / "model.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kwargs: dict[str, Any] = dict(input_names=input_names, output_names=output_names,
                                              opset_version=opts.opset, dynamic_axes=dynamic_axes or None)
                if opts.exporter == "dynamo":
                    require("onnxscript", "the dynamo ONNX exporter (pip install onnxscript)")
                    kwargs.update(dynamo=True, external_data=True, verbose=False)
                else:
                    kwargs.update(dynamo=False, do_constant_folding=opts.do_constant_folding)
                _quiet_export(torch, module, args, str(tmp_path), kwargs)
            model = onnx.load(str(tmp_path), load_external_data=True)
        except (InvalidInputError, ExportError):
            raise
        except Exception as exc:  # noqa: BLE001 - exporters raise a zoo of types
            other = "torchscript" if opts.exporter == "dynamo" else "dynamo"
            raise ExportError(f"The {opts.exporter} exporter failed: {type(exc).__name__}: "
                              f"{str(exc)[:2000]}\nTry --exporter {other}, another --opset, or simplify "
                              "the unsupported operation named above.") from exc
    if model.ir_version > onnx.IR_VERSION:
        raise ExportError(f"The exporter wrote IR version {model.ir_version} but this onnx reads "
                          f"{onnx.IR_VERSION}: upgrade the onnx package.")
    return model, time.perf_counter() - start


def _quiet_export(torch: Any, module: Any, args: tuple[Any, ...], path: str, kwargs: dict[str, Any]) -> None:
    """The dynamo exporter prints progress to stdout; keep it in our log instead."""
    import contextlib
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        torch.onnx.export(module, args, path, **kwargs)
    for line in buf.getvalue().splitlines():
        if line.strip():
            log.debug("exporter: %s", line)


def _verify(module: Any, torch: Any, model: onnx.ModelProto, sample: dict[str, np.ndarray],
            input_names: list[str], output_names: list[str], dynamic_axes: dict[str, dict[int, str]],
            opts: ExportOptions) -> list[tuple[dict[str, tuple[int, ...]], ComparisonReport]]:
    from ..ort_exec import make_session, run_model

    results = []
    # ORT's graph optimizations off: we verify the exported graph, not ORT's rewrite of it.
    session = make_session(model, optimization="disabled")
    for feed in verification_feeds(sample, dynamic_axes, opts.verify_batch_sizes):
        ref = _torch_outputs(module, torch, feed, input_names, output_names)
        got = run_model(session, feed)
        report = compare_outputs(got, ref, opts.tolerance)
        shapes = {k: tuple(v.shape) for k, v in feed.items()}
        results.append((shapes, report))
        if not report.passed:
            raise VerificationError(
                f"The exported ONNX disagrees with torch for inputs {shapes} beyond rtol="
                f"{opts.tolerance.rtol:g}/atol={opts.tolerance.atol:g}:\n{report.table()}\n"
                "Try the other exporter (--exporter), or check for data-dependent control flow "
                "that tracing froze.", report)
        log.info("verified against torch at %s: max abs err %.2e", shapes, report.worst().max_abs_error)
    return results


__all__ = ["ExportOptions", "ExportResult", "export_onnx", "verification_feeds", "model_hash"]
