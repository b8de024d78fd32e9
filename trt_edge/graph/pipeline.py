"""The checked pass pipeline behind ``trt-edge optimize``.

Every pass runs on an onnx-graphsurgeon graph imported from the previous
pass's model; after it, the exported model must pass
``onnx.checker.check_model(full_check=True)`` and strict shape inference, and
(with ``verify``) must reproduce the *original* model's outputs in ONNX
Runtime, with ORT's own graph optimisations disabled so that ORT cannot hide
a broken rewrite, on generated inputs the original model accepts (two sizes of
every dynamic axis; :mod:`.verify`) and on any real inputs given. Only passes that
changed the graph are verified, against reference outputs computed once; the
model is checked once per round (one ONNX Runtime session), and when that check
fails each pass of the round is checked on its own, so the first pass that breaks
the numerics is still the one named in the error. The default pipeline is repeated until a full round changes nothing
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
from ..onnx_io import iter_nodes
from .passes.fold_constants import DEFAULT_SIZE_THRESHOLD
from .registry import PassContext, default_pipeline, get_pass
from .report import OptimizationReport, PassRecord, initializer_bytes, op_histogram
from .verify import Verifier, build_verifier

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
    ``verify_dim_sizes``: one generated feed per value; named dynamic dimensions get that value,
    the next one, and so on (distinct sizes per axis); unnamed ones get 1; when the original
    model rejects that feed, other sizes are tried (:func:`.verify.dim_candidates`). Empty:
    verify on ``real_inputs`` only.
    ``shapes``: fixed input shapes for the generated feeds (``{"input": (1, 3, 224, 224)}``,
    ``()`` for a scalar).
    ``input_values``: a fixed value per input for the generated feeds (``{"sr": 16000}``).
    ``real_inputs``: feeds of real data, checked like the generated ones.
    ``size_threshold``: ``fold_constants`` does not materialise a tensor over this many bytes
    that is larger than the constants it is computed from (onnxslim's ``--size-threshold``);
    None: no limit.
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
    input_values: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    real_inputs: Sequence[Mapping[str, np.ndarray]] = ()
    size_threshold: int | None = DEFAULT_SIZE_THRESHOLD
    seed: int = 0
    pass_options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    protected: Sequence[str] = ()
    keep_inferred_value_info: bool = False

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise InvalidInputError("max_rounds must be >= 1.")
        if self.verify and not self.verify_dim_sizes and not self.real_inputs:
            raise InvalidInputError("verify needs at least one feed: give verify_dim_sizes or real_inputs.")
        if self.size_threshold is not None and self.size_threshold < 0:
            raise InvalidInputError("size_threshold must be >= 0 bytes (or None for no limit).")
        if self.tolerance.rtol < 0 or self.tolerance.atol < 0:
            raise InvalidInputError("The verification tolerance (rtol/atol) must be >= 0.")

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


_STASH = "__trt_edge_string_attr_"


def _serialize(model: onnx.ModelProto) -> bytes | None:
    """The model's bytes, or None for a model over protobuf's 2 GB limit."""
    try:
        data = model.SerializeToString()
    except ValueError:  # "Message ... exceeds maximum protobuf size of 2GB"
        return None
    return data if len(data) <= _PROTO_LIMIT else None


def _stash_string_attributes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
    """A copy of ``model`` whose string tensor attributes are placeholders (onnx-graphsurgeon 0.6.1
    cannot export string tensors in attributes, e.g. LabelEncoder's keys_tensor), and the table."""
    table: dict[str, onnx.TensorProto] = {}
    if not any(a.type == onnx.AttributeProto.TENSOR and a.t.data_type == onnx.TensorProto.STRING
               for n in iter_nodes(model.graph) for a in n.attribute):
        return model, table
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in iter_nodes(copy.graph):
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == onnx.TensorProto.STRING:
                key = f"{_STASH}{len(table)}"
                saved = onnx.TensorProto()
                saved.CopyFrom(a.t)
                table[key] = saved
                a.t.CopyFrom(onnx.helper.make_tensor(key, onnx.TensorProto.INT64, [1], [len(table)]))
    return copy, table


def _restore_string_attributes(model: onnx.ModelProto, table: Mapping[str, onnx.TensorProto]) -> None:
    if not table:
        return
    for node in iter_nodes(model.graph):
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.name in table:
                a.t.CopyFrom(table[a.t.name])


class _Checker:
    """Structural checks, at the strictest level the input model itself passes."""

    def __init__(self, model: onnx.ModelProto, enabled: bool, warnings: list[str]) -> None:
        self.enabled = enabled
        self.full = True
        self.strict = True
        self.names: list[str] = []
        size = model.ByteSize()  # (slow on big models: once)
        self.infers = size <= _PROTO_LIMIT  # infer() fills value_info below that size
        if not enabled:
            return
        if size > _PROTO_LIMIT:
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
        if data is None:
            data = _serialize(model)
            if data is None:
                return model
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
    pass_options = {k: dict(v) for k, v in options.pass_options.items()}
    pass_options.setdefault("fold_constants", {}).setdefault("size_threshold", options.size_threshold)
    ctx = PassContext(opset=_default_opset(original), options=pass_options,
                      protected=set(options.protected), shapes_inferred=checker.infers)
    current = checker.infer(original, None)
    verifier: Verifier | None = None
    if options.verify:
        verifier = build_verifier(current, dim_sizes=options.verify_dim_sizes, shapes=options.shapes,
                                  values=options.input_values, real_inputs=options.real_inputs,
                                  seed=options.seed,
                                  data=_serialize(original))
    current_sig = _signature(current)
    records: list[PassRecord] = []
    tolerance = options.tolerance
    version = 0                       # bumps whenever a pass changes the model
    ran_at: dict[str, int] = {}       # pass -> version right after its last run
    final_error: float | None = 0.0 if verifier else None
    # Changed, not yet verified: (record, model bytes or proto, tolerance in force after that pass).
    pending: list[tuple[PassRecord, Any, Tolerance]] = []

    def flush() -> None:
        """Verify the latest pending model in one session; on failure, find the pass that broke it."""
        nonlocal final_error
        if verifier is None or not pending:
            pending.clear()
            return
        t = time.perf_counter()
        last_rec, last_model, last_tol = pending[-1]
        try:
            err = verifier.check(last_model, f"Graph pass '{last_rec.name}'", last_tol,
                                 f"Skip it with --skip {last_rec.name} and report the bug.")
        except VerificationError:
            for rec, model_i, tol_i in pending:  # the first pass whose output fails is the culprit
                rec.max_abs_error = verifier.check(model_i, f"Graph pass '{rec.name}'", tol_i,
                                                   f"Skip it with --skip {rec.name} and report the bug.")
                rec.tolerance = dataclasses.asdict(tol_i)
            raise
        for rec, _, tol_i in pending:
            rec.tolerance = dataclasses.asdict(tol_i)
        last_rec.max_abs_error = err
        last_rec.check_seconds += time.perf_counter() - t
        final_error = err
        pending.clear()

    try:  # onnx-graphsurgeon 0.6.1 cannot represent every model (optional-typed values, ...)
        stashed, table = _stash_string_attributes(current)
        _to_model(gs.import_onnx(stashed), original)
    except Exception as exc:  # noqa: BLE001
        warnings.append(f"onnx-graphsurgeon cannot represent this model ({type(exc).__name__}: "
                        f"{str(exc)[:120]}); no pass ran and the model is returned unchanged")
        log.warning("%s", warnings[-1])
        names = []
    cached: tuple[Any, dict[str, onnx.TensorProto]] | None = None  # gs graph equal to `current`
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
                if cached is not None:  # the previous pass changed nothing: reuse its graph
                    graph, table = cached
                else:
                    stashed, table = _stash_string_attributes(current)
                    graph = gs.import_onnx(stashed)
                cached = None
                graph = gpass(graph, ctx)
                new = _to_model(graph, original)
                _restore_string_attributes(new, table)
            except (GraphPassError, VerificationError):
                raise
            except Exception as exc:  # noqa: BLE001 - a bug in a pass must name the pass
                raise GraphPassError(f"Graph pass '{name}' failed: {type(exc).__name__}: {exc}. "
                                     f"Skip it with --skip {name} and report the bug.") from exc
            seconds = time.perf_counter() - t0
            t1 = time.perf_counter()
            sig = _signature(new)
            changed = sig != current_sig
            if not changed:
                cached = (graph, table)
            data = None
            if changed:
                if gpass.tolerance is not None:
                    # Errors accumulate against the original: the looser bound holds from here on.
                    looser = Tolerance(max(tolerance.rtol, gpass.tolerance.rtol),
                                       max(tolerance.atol, gpass.tolerance.atol))
                    if looser != tolerance:
                        flush()  # what came before is held to the stricter bound
                        warnings.append(f"'{name}' changes float rounding: verified with rtol "
                                        f"{looser.rtol:g} / atol {looser.atol:g} from this pass on")
                    tolerance = looser
                data = _serialize(new)
                new = checker.infer(new, name, data)
                version += 1
                changed_this_round = True
                current, current_sig = new, sig
            check_seconds = time.perf_counter() - t1
            after_nodes = _node_count(current)
            ran_at[name] = version
            record = PassRecord(name, rnd, seconds, check_seconds, before_nodes, after_nodes,
                                dict(ctx.stats.get(name, {})), None, None)
            records.append(record)
            if changed and verifier is not None:
                pending.append((record, data if data is not None else new, tolerance))
            log.info("pass %-20s round %d: %d -> %d nodes (%.2fs + %.2fs checks)", name, rnd,
                     before_nodes, after_nodes, seconds, check_seconds)
        flush()  # one verification session per round
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
