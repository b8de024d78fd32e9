"""The checked pass pipeline behind ``trt-edge optimize``.

Every pass runs on an onnx-graphsurgeon graph imported from the previous
pass's model; after it, the exported model must pass
``onnx.checker.check_model(full_check=True)`` and strict shape inference, and
(with ``verify``) must reproduce the *original* model's outputs in ONNX
Runtime, with ORT's own graph optimisations disabled so that ORT cannot hide
a broken rewrite, on random inputs at two sizes of every dynamic axis and on
any real inputs given. The first pass that breaks any of this is named in the
error. The default pipeline is repeated until a full round changes nothing
(at most ``max_rounds``), since one pass exposes work for another (a static
shape becomes a constant that folding then removes).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from ..artifacts import load_onnx, save_onnx, write_sidecar
from ..errors import GraphPassError, InvalidInputError, VerificationError
from ..numerics import FP32_EXACT, Tolerance, compare_outputs
from ..onnx_io import graph_inputs, random_inputs
from .registry import PassContext, default_pipeline, get_pass
from ..onnx_io import iter_nodes
from .report import OptimizationReport, PassRecord, initializer_bytes, op_histogram

log = logging.getLogger(__name__)

_PROTO_LIMIT = 2_000_000_000


@dataclasses.dataclass
class OptimizeOptions:
    """How :func:`optimize` runs.

    ``passes``: pass names in order; None runs the default pipeline.
    ``skip``: names removed from that list.
    ``verify``: compare outputs with the original model in ONNX Runtime after each pass.
    ``check``: run the ONNX checker (full) and strict shape inference after each pass.
    ``max_rounds``: repeat the pass list until nothing changes, at most this often.
    ``tolerance``: the FP32 agreement required (default rtol 1e-5, atol 1e-6).
    ``verify_dim_sizes``: one random feed per value; named dynamic dimensions get that value,
    the next one, and so on (distinct sizes per axis); unnamed ones get 1.
    ``shapes``: fixed input shapes for the random feeds (``{"input": (1, 3, 224, 224)}``).
    ``real_inputs``: extra feeds (real data) checked like the random ones.
    ``pass_options``: per-pass options (``{"fold_constants": {"max_bytes": 1 << 20}}``).
    ``protected``: tensor names no pass may remove or replace (besides the graph outputs).
    ``keep_inferred_value_info``: keep the intermediate shapes shape inference added. Off by
    default: with them ONNX Runtime (1.32, CPU) fuses Add+LayerNormalization into
    SkipLayerNormalization in MiniLM, which measured ~8% *slower* single-threaded; the output
    keeps exactly the value_info the input had (for tensors that still exist).
    """

    passes: Sequence[str] | None = None
    skip: Sequence[str] = ()
    verify: bool = True
    check: bool = True
    max_rounds: int = 3
    tolerance: Tolerance = FP32_EXACT
    verify_dim_sizes: Sequence[int] = (2, 3)
    shapes: Mapping[str, Sequence[int]] = dataclasses.field(default_factory=dict)
    real_inputs: Sequence[Mapping[str, np.ndarray]] = ()
    seed: int = 0
    pass_options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    protected: Sequence[str] = ()
    keep_inferred_value_info: bool = False

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise InvalidInputError("max_rounds must be >= 1.")
        if self.verify and not self.verify_dim_sizes and not self.real_inputs:
            raise InvalidInputError("verify needs at least one feed: give verify_dim_sizes or real_inputs.")

    def pass_names(self) -> list[str]:
        names = list(self.passes) if self.passes is not None else default_pipeline()
        for n in [*names, *self.skip]:
            get_pass(n)  # raises InvalidInputError naming the available passes
        return [n for n in names if n not in set(self.skip)]


def _default_opset(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    return 1


def _signature(model: onnx.ModelProto) -> str:
    """A cheap fingerprint of what a model computes (nodes, interface, initializers; not value_info)."""
    h = hashlib.sha256()
    g = model.graph
    for part in (*g.node, *g.input, *g.output):
        h.update(part.SerializeToString(deterministic=True))
    for t in g.initializer:
        h.update(f"{t.name}|{t.data_type}|{list(t.dims)}|".encode())
        h.update(zlib.adler32(t.raw_data).to_bytes(4, "little") if t.HasField("raw_data")
                 else t.SerializeToString(deterministic=True))
    return h.hexdigest()


def _node_count(model: onnx.ModelProto) -> int:
    return sum(1 for _ in iter_nodes(model.graph))


def _to_model(graph: Any, template: onnx.ModelProto) -> onnx.ModelProto:
    """Export ``graph`` keeping the template model's metadata (IR version, opsets, producer)."""
    import onnx_graphsurgeon as gs
    model = gs.export_onnx(graph, do_type_check=False)
    # IR < 4 requires every initializer to be a graph input; onnx-graphsurgeon treats such
    # initializers as constants and drops them from the inputs, which only IR >= 4 allows.
    model.ir_version = max(template.ir_version, 4)
    del model.opset_import[:]
    model.opset_import.extend(template.opset_import)
    model.producer_name = template.producer_name
    model.producer_version = template.producer_version
    model.domain = template.domain
    model.model_version = template.model_version
    model.doc_string = template.doc_string
    del model.metadata_props[:]
    model.metadata_props.extend(template.metadata_props)
    if len(template.functions) and not len(model.functions):
        model.functions.extend(template.functions)
    return model


class _Checker:
    """Structural checks, at the strictest level the input model itself passes."""

    def __init__(self, model: onnx.ModelProto, enabled: bool, warnings: list[str]) -> None:
        self.enabled = enabled
        self.full = True
        self.strict = True
        self.names: list[str] = []
        self.infers = model.ByteSize() <= _PROTO_LIMIT  # infer() fills value_info below that size
        if not enabled:
            return
        if model.ByteSize() > _PROTO_LIMIT:
            warnings.append("model over 2 GB: the ONNX checker was skipped")
            self.enabled = False
            return
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as exc:  # noqa: BLE001
            self.full = False
            try:
                onnx.checker.check_model(model)
            except Exception as exc2:  # noqa: BLE001
                raise InvalidInputError(f"The input model fails the ONNX checker: {exc2}. Fix the "
                                        "model (or re-export it) before optimizing.") from exc2
            warnings.append(f"the input model fails the full ONNX check ({str(exc).splitlines()[0]}); "
                            "passes are checked with check_model(full_check=False)")
        try:
            onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
        except Exception as exc:  # noqa: BLE001
            self.strict = False
            warnings.append(f"the input model fails strict shape inference ({str(exc).splitlines()[0]}); "
                            "passes are checked with non-strict inference")
        self.names = ["check_model" + (" + strict type-checking shape inference (= full_check)"
                                       if self.full else " (structure only)"),
                      f"infer_shapes(check_type=True, strict_mode={self.strict}, data_prop=True)"]

    def infer(self, model: onnx.ModelProto, pass_name: str | None,
              data: bytes | None = None) -> onnx.ModelProto:
        """Check ``model`` and return it with inferred shapes (value_info) filled in.

        ``check_model`` (structure) followed by strict, type-checking shape
        inference is what ``check_model(full_check=True)`` does; running the
        inference ourselves (with data propagation) also yields the shapes the
        next pass uses, from one serialisation.
        """
        if model.ByteSize() > _PROTO_LIMIT:
            return model
        data = model.SerializeToString() if data is None else data
        if self.enabled:
            try:
                onnx.checker.check_model(data, full_check=False)
            except Exception as exc:  # noqa: BLE001
                raise GraphPassError(f"Graph pass '{pass_name}' produced an invalid model: {exc}. "
                                     f"Skip it with --skip {pass_name} and report the bug.") from exc
        try:
            return onnx.shape_inference.infer_shapes(data, check_type=self.enabled,
                                                     strict_mode=self.enabled and self.strict,
                                                     data_prop=True)
        except Exception as exc:  # noqa: BLE001
            if not self.enabled:
                return model
            raise GraphPassError(f"Graph pass '{pass_name}' produced a model that fails shape "
                                 f"inference: {exc}. Skip it with --skip {pass_name}.") from exc


class _Verifier:
    """Reference outputs of the original model and comparison of later models against them."""

    def __init__(self, model: onnx.ModelProto, options: OptimizeOptions) -> None:
        specs = graph_inputs(model)
        self.feeds: list[dict[str, np.ndarray]] = []
        for i, size in enumerate(options.verify_dim_sizes):
            self.feeds.append(random_inputs(specs, shapes=options.shapes,
                                            dim_values=_dim_sizes(specs, int(size)),
                                            seed=options.seed + i))
        self.feeds.extend(dict(f) for f in options.real_inputs)
        self.references = self._run_all(model)

    def _run_all(self, model: onnx.ModelProto | bytes) -> list[dict[str, np.ndarray]]:
        from ..runtime.onnxrt import OnnxRuntimeRunner, OrtOptions
        # ORT's own optimisations off: they must not hide (or cause) a difference.
        with OnnxRuntimeRunner(model, OrtOptions(graph_optimization="disable")) as runner:
            return [runner.infer(dict(f)) for f in self.feeds]

    def check(self, model: onnx.ModelProto | bytes, pass_name: str, tolerance: Tolerance) -> float:
        """Max abs error vs the original over all feeds; raises VerificationError beyond ``tolerance``."""
        try:
            outputs = self._run_all(model)
        except Exception as exc:  # noqa: BLE001
            raise VerificationError(f"Graph pass '{pass_name}' produced a model ONNX Runtime cannot "
                                    f"run: {exc}. Skip it with --skip {pass_name}.") from exc
        worst = 0.0
        for i, (out, ref) in enumerate(zip(outputs, self.references)):
            report = compare_outputs(out, ref, tolerance)
            worst = max(worst, max((o.max_abs_error for o in report.outputs), default=0.0))
            if not report.passed:
                raise VerificationError(
                    f"Graph pass '{pass_name}' changed the model's outputs beyond rtol="
                    f"{tolerance.rtol:g}, atol={tolerance.atol:g} on feed {i}:\n"
                    f"{report.table()}\nSkip it with --skip {pass_name} and report the bug.", report)
        return worst


def _dim_sizes(specs: Sequence[Any], base: int) -> dict[str, int]:
    """A different size for every named dynamic dimension (base, base+1, ...).

    Distinct sizes make a rewrite that confuses two dynamic axes (say batch
    and sequence) produce wrong shapes or values, so verification catches it.
    """
    sizes: dict[str, int] = {}
    for spec in specs:
        for d in spec.shape or ():
            if isinstance(d, str) and d not in sizes:
                sizes[d] = base + len(sizes)
    return sizes


def _random_feeds_need_sizes(model: onnx.ModelProto, options: OptimizeOptions) -> None:
    for spec in graph_inputs(model):
        if spec.shape is None and spec.name not in options.shapes:
            raise InvalidInputError(f"Input '{spec.name}' has unknown rank: give its shape "
                                    f"(--shapes {spec.name}:1x3x224x224) or use --no-verify.")


def optimize(model: onnx.ModelProto | str | os.PathLike[str],
             options: OptimizeOptions | None = None) -> tuple[onnx.ModelProto, OptimizationReport]:
    """Run the pass pipeline; return the optimized model and a report.

    Guarantees (unless switched off in ``options``): every intermediate and the
    final model pass the checks the input passes, and the final model's
    outputs match the input's within ``options.tolerance`` on every
    verification feed (or within the looser tolerance a pass that changes
    float rounding declares, from that pass on - ``fold_bn``: rtol 1e-4 /
    atol 1e-5; the report names it). The input model is not modified.
    """
    from .._lazy import require
    gs = require("onnx_graphsurgeon", "graph passes")
    options = options or OptimizeOptions()
    source: str | None = None
    if isinstance(model, onnx.ModelProto):
        original = model
    else:
        source = os.fspath(model)
        original = load_onnx(source)
    names = options.pass_names()
    t_start = time.perf_counter()
    warnings: list[str] = []
    if original.ir_version < 4 and len(original.graph.initializer):
        init_names = {t.name for t in original.graph.initializer}
        if any(i.name in init_names for i in original.graph.input):
            warnings.append("IR < 4 model: initializers listed as graph inputs are treated as constants "
                            "(no longer overridable inputs); the output uses IR version 4")
    checker = _Checker(original, options.check, warnings)
    verifier = None
    if options.verify:
        _random_feeds_need_sizes(original, options)
        verifier = _Verifier(original, options)
    ctx = PassContext(opset=_default_opset(original),
                      options={k: dict(v) for k, v in options.pass_options.items()},
                      protected=set(options.protected), shapes_inferred=checker.infers)
    current = checker.infer(original, None)
    current_sig = _signature(current)
    records: list[PassRecord] = []
    tolerance = options.tolerance
    version = 0                       # bumps whenever a pass changes the model
    ran_at: dict[str, int] = {}       # pass -> version right after its last run
    final_error: float | None = 0.0 if verifier else None
    for rnd in range(1, options.max_rounds + 1):
        changed_this_round = False
        for name in names:
            if ran_at.get(name) == version:
                continue  # nothing changed since this pass last ran: it would find nothing new
            gpass = get_pass(name)
            before_nodes = _node_count(current)
            ctx.stats = {}
            t0 = time.perf_counter()
            try:
                graph = gs.import_onnx(current)
                graph = gpass(graph, ctx)
                new = _to_model(graph, original)
            except (GraphPassError, VerificationError):
                raise
            except Exception as exc:  # noqa: BLE001 - a bug in a pass must name the pass
                raise GraphPassError(f"Graph pass '{name}' failed: {type(exc).__name__}: {exc}. "
                                     f"Skip it with --skip {name} and report the bug.") from exc
            seconds = time.perf_counter() - t0
            t1 = time.perf_counter()
            sig = _signature(new)
            err: float | None = None
            if sig != current_sig:
                if gpass.tolerance is not None:
                    # Errors accumulate against the original: the looser bound holds from here on.
                    looser = Tolerance(max(tolerance.rtol, gpass.tolerance.rtol),
                                       max(tolerance.atol, gpass.tolerance.atol))
                    if looser != tolerance:
                        warnings.append(f"'{name}' changes float rounding: verified with rtol "
                                        f"{looser.rtol:g} / atol {looser.atol:g} from this pass on")
                    tolerance = looser
                data = new.SerializeToString() if new.ByteSize() <= _PROTO_LIMIT else None
                new = checker.infer(new, name, data)
                err = verifier.check(data if data is not None else new, name, tolerance) if verifier else None
                version += 1
                changed_this_round = True
                current, current_sig = new, sig
                if err is not None:
                    final_error = err
            check_seconds = time.perf_counter() - t1
            after_nodes = _node_count(current)
            ran_at[name] = version
            records.append(PassRecord(name, rnd, seconds, check_seconds, before_nodes, after_nodes,
                                      dict(ctx.stats.get(name, {})), err,
                                      dataclasses.asdict(tolerance) if err is not None else None))
            log.info("pass %-20s round %d: %d -> %d nodes (%.2fs + %.2fs checks)", name, rnd,
                     before_nodes, after_nodes, seconds, check_seconds)
        if not changed_this_round:
            break
    if not options.keep_inferred_value_info:
        current = _without_inferred_value_info(current, original)
    report = OptimizationReport(
        source=source, passes=records, ops_before=op_histogram(original), ops_after=op_histogram(current),
        initializer_bytes_before=initializer_bytes(original),
        initializer_bytes_after=initializer_bytes(current),
        total_seconds=time.perf_counter() - t_start, checks=checker.names if checker.enabled else [],
        verified=verifier is not None, verification_feeds=len(verifier.feeds) if verifier else 0,
        tolerance=dataclasses.asdict(tolerance) if verifier else None,
        max_abs_error=final_error, warnings=warnings)
    return current, report


def _without_inferred_value_info(model: onnx.ModelProto, original: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with only the top-level value_info entries the original model already had."""
    keep = {vi.name for vi in original.graph.value_info}
    kept = []
    for vi in model.graph.value_info:
        if vi.name in keep:
            copy = onnx.ValueInfoProto()
            copy.CopyFrom(vi)
            kept.append(copy)
    if model is original:  # never modify the caller's model
        model = onnx.ModelProto()
        model.CopyFrom(original)
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    return model


def optimize_file(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                  options: OptimizeOptions | None = None) -> OptimizationReport:
    """Optimize ``src`` into ``dst`` (written atomically, with a ``dst.json`` sidecar).

    Nothing is written when a pass fails a check or changes the numerics.
    """
    options = options or OptimizeOptions()
    if Path(src).resolve() == Path(dst).resolve():
        raise InvalidInputError("The output path must differ from the input path.")
    model, report = optimize(src, options)
    save_onnx(model, dst, external_data=model.ByteSize() > _PROTO_LIMIT)
    opts = dataclasses.asdict(options)
    opts["real_inputs"] = len(options.real_inputs)
    opts["tolerance"] = dataclasses.asdict(options.tolerance)
    write_sidecar(dst, "onnx.optimized", sources={"onnx": src}, options=opts,
                  extra={"report": report.to_dict()})
    return report
