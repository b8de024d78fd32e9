"""sparsify: Gemm/MatMul with a constant, mostly-zero weight -> ``SparseLinear`` (trt_edge domain).

``SparseLinear(X, values, col_idx, row_ptr, bias) -> Y`` computes ``X @ W^T + bias`` with W
stored compressed (CSR or BSR, see :mod:`trt_edge.sparse.formats`). TensorRT runs it with
the ``SparseLinear`` plugin (csrc/sparse/plugin); ONNX Runtime with the custom op in
:mod:`trt_edge.sparse.ort`. Not in the default pipeline: it changes the op set (the model
needs the plugin or the custom op), so it is opt-in. :func:`sparsify_model` is the entry
point: it adds the ``trt_edge`` opset import and, given feeds, verifies the result in ONNX
Runtime (with the custom op). Inside ``trt_edge.graph.pipeline.optimize`` the pass only runs
with ``check=False, verify=False``: the pipeline's checker and ORT verifier know neither the
domain nor the op.

Rewritten: ``Gemm(A, B[, C])`` with transA=0, alpha=1, beta=1 (or no C), constant 2-D B and
a constant C of shape [N] / [1, N]; ``MatMul(A, B)`` with constant 2-D B, fused with a
following ``Add`` of a constant [N]-broadcast bias when the MatMul's output feeds only
that Add. Dense fallback: a weight below the sparsity threshold, smaller than
``min_elements``, or (``format="auto"``) for which the dense product timed faster, keeps its
original node. Options (``ctx.options["sparsify"]``):
``threshold`` (0.5), ``min_elements`` (1024), ``format`` ("auto" | "csr" | "bsr"),
``block`` ((1, 4), for "bsr"), ``batch`` (1: the batch size "auto" times with),
``allow_dense`` (True: "auto" may keep a layer dense when dense is faster).

Numerics: the sparse kernels sum the non-zero products in a different order than a dense
GEMM, so outputs differ by float32 rounding (relative ~1e-6), not bit for bit.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from ..registry import PassContext, register_pass
from ._common import constant_value, gs_module, is_constant, is_default_domain, protected_names

log = logging.getLogger(__name__)

PASS_NAME = "sparsify"
DOMAIN = "trt_edge"
OP_TYPE = "SparseLinear"


@dataclasses.dataclass(frozen=True)
class SparsifyOptions:
    """Typed form of the pass options (see the module docstring)."""

    threshold: float = 0.5
    min_elements: int = 1024
    format: str = "auto"
    block: tuple[int, int] = (1, 4)
    batch: int = 1
    allow_dense: bool = True

    def __post_init__(self) -> None:
        from ...errors import InvalidInputError
        if not 0.0 <= self.threshold <= 1.0:
            raise InvalidInputError(f"sparsify threshold must be within [0, 1], got {self.threshold}.")
        if self.format not in ("auto", "csr", "bsr"):
            raise InvalidInputError(f"sparsify format must be auto, csr or bsr, got '{self.format}'.")
        if self.batch < 1 or self.min_elements < 0:
            raise InvalidInputError("sparsify batch must be >= 1 and min_elements >= 0.")

    @classmethod
    def from_context(cls, ctx: PassContext) -> "SparsifyOptions":
        opts = dict(ctx.options.get(PASS_NAME, {}))
        if "block" in opts:
            opts["block"] = tuple(int(v) for v in opts["block"])
        return cls(**opts)


def _bias_vector(value: np.ndarray, n: int) -> np.ndarray | None:
    """``value`` as a [n] vector if it broadcasts as one along the last axis, else None."""
    if value.size == n and (value.ndim == 1 or all(d == 1 for d in value.shape[:-1])) \
            and value.shape[-1] == n:
        return value.reshape(n)
    return None


def _match(node: Any, protected: set[str]) -> tuple[np.ndarray, np.ndarray | None, list[Any], Any] | None:
    """(W [N, K], bias or None, nodes replaced, output tensor) for a rewritable node."""
    if not is_default_domain(node):
        return None
    if node.op == "Gemm":
        if len(node.inputs) < 2 or not is_constant(node.inputs[1]):
            return None
        if node.attrs.get("transA", 0) or float(node.attrs.get("alpha", 1.0)) != 1.0:
            return None
        b = constant_value(node.inputs[1])
        if b.ndim != 2:
            return None
        w = b if node.attrs.get("transB", 0) else b.T
        bias = None
        if len(node.inputs) > 2 and node.inputs[2].name:
            c = node.inputs[2]
            if not is_constant(c) or float(node.attrs.get("beta", 1.0)) != 1.0:
                return None
            bias = _bias_vector(constant_value(c), w.shape[0])
            if bias is None:
                return None
        return w, bias, [node], node.outputs[0]
    if node.op == "MatMul":
        if len(node.inputs) != 2 or not is_constant(node.inputs[1]):
            return None
        b = constant_value(node.inputs[1])
        if b.ndim != 2:
            return None
        w, y = b.T, node.outputs[0]
        consumers = list(y.outputs)
        if y.name not in protected and len(consumers) == 1 and consumers[0].op == "Add" \
                and is_default_domain(consumers[0]) and len(consumers[0].inputs) == 2:
            add = consumers[0]
            other = add.inputs[1] if add.inputs[0] is y else add.inputs[0]
            if other is not y and is_constant(other):
                bias = _bias_vector(constant_value(other), w.shape[0])
                if bias is not None and bias.dtype == w.dtype:
                    return w, bias, [node, add], add.outputs[0]
        return w, None, [node], y
    return None


def _choose(w: np.ndarray, opts: SparsifyOptions) -> tuple[str, tuple[int, int], dict[str, float]]:
    """``(format, block, {candidate label: seconds timed})`` (no timings where none were run)."""
    if opts.format == "csr":
        return "csr", (1, 1), {}
    if opts.format == "bsr":
        return "bsr", opts.block, {}
    from ...sparse import cpu
    from ...sparse.select import SelectOptions, block_fill, choose_format
    if cpu.is_available():
        choice = choose_format(w, SelectOptions(batch=opts.batch, include_dense=opts.allow_dense))
        return choice.format, choice.block, dict(choice.seconds)
    # No native library to time with: the largest fully-dense block shape, else CSR.
    from ...sparse.formats import BLOCK_SHAPES
    full = [b for b in BLOCK_SHAPES if block_fill(w, b) >= 0.999]
    if full:
        return "bsr", max(full, key=lambda b: b[0] * b[1]), {}
    return "csr", (1, 1), {}


@register_pass(PASS_NAME, default=False, order=900)
def sparsify(graph: Any, ctx: PassContext) -> Any:
    """Replace Gemm/MatMul with constant sparse weights by SparseLinear (trt_edge domain) nodes.

    Guarantees: only nodes whose weight has sparsity >= threshold are replaced; the
    replacement computes the same function up to float32 summation order; the names of
    graph outputs are kept; every other node is untouched. Per-layer decisions are recorded
    in ``ctx.stats["sparsify"]["layers"]``.
    """
    from ...sparse.formats import convert, sparsity
    gs = gs_module()
    opts = SparsifyOptions.from_context(ctx)
    protected = protected_names(graph, ctx)
    stats = ctx.stats.setdefault(PASS_NAME, {})
    layers: list[dict[str, Any]] = stats.setdefault("layers", [])
    for node in list(graph.nodes):
        if node.op not in ("Gemm", "MatMul"):
            continue
        m = _match(node, protected)
        if m is None:
            continue
        w, bias, replaced, out = m
        if w.dtype not in (np.float32, np.float16):
            continue
        s = sparsity(w)
        entry: dict[str, Any] = {"node": node.name, "shape": [int(w.shape[0]), int(w.shape[1])],
                                 "sparsity": round(float(s), 4)}
        if s < opts.threshold or w.size < opts.min_elements:
            entry["format"] = "dense"
            entry["reason"] = "below threshold" if s < opts.threshold else "too small"
            layers.append(entry)
            continue
        fmt, block, timed = _choose(w, opts)
        if timed:  # what "auto" compared, so a report (or a test) can see the candidates, not only the winner
            entry["timed_us"] = {k: round(v * 1e6, 2) for k, v in timed.items()}
        if fmt == "dense":
            entry.update(format="dense", reason="dense timed faster")
            layers.append(entry)
            ctx.record(PASS_NAME, kept_dense=1)
            continue
        sw = convert(np.ascontiguousarray(w), fmt, block)
        base = node.name or out.name
        bias_arr = bias if bias is not None else np.zeros(w.shape[0], dtype=w.dtype)
        inputs = [node.inputs[0],
                  gs.Constant(f"{base}.sparse_values", np.ascontiguousarray(sw.values)),
                  gs.Constant(f"{base}.sparse_col_idx", sw.col_idx),
                  gs.Constant(f"{base}.sparse_row_ptr", sw.row_ptr),
                  gs.Constant(f"{base}.sparse_bias", np.ascontiguousarray(bias_arr, dtype=w.dtype))]
        for old in replaced:
            old.outputs.clear()
            old.inputs.clear()
        graph.nodes.append(gs.Node(
            op=OP_TYPE, name=f"{base}.sparse", domain=DOMAIN, inputs=inputs, outputs=[out],
            attrs={"format": fmt, "block_rows": int(sw.block[0]), "block_cols": int(sw.block[1]),
                   "in_features": int(w.shape[1]), "out_features": int(w.shape[0])}))
        entry.update(format=fmt, block=list(sw.block), dense_bytes=int(w.nbytes),
                     sparse_bytes=int(sw.nbytes), fused_bias=len(replaced) > 1 or bias is not None)
        layers.append(entry)
        ctx.record(PASS_NAME, replaced=1, dense_bytes=int(w.nbytes), sparse_bytes=int(sw.nbytes))
    graph.cleanup().toposort()
    return graph


@dataclasses.dataclass
class SparsifyResult:
    model: onnx.ModelProto
    layers: list[dict[str, Any]]
    replaced: int
    verification: Any = None  # a numerics.ComparisonReport per verified feed, when verified


def sparsify_model(model: onnx.ModelProto, options: SparsifyOptions | None = None,
                   protected: set[str] | None = None, verify_feeds: Sequence[Mapping[str, np.ndarray]] = (),
                   tolerance: Any = None) -> SparsifyResult:
    """Run the pass on an ONNX model; returns the rewritten model (with the ``trt_edge``
    opset import added) and the per-layer decisions. The input model is not modified.

    With ``verify_feeds``, both models run in ONNX Runtime on each feed and every output must
    agree within ``tolerance`` (default: numerics.FP32_EXPORT, rtol 1e-4 / atol 1e-5, because
    sparse sums are reordered); otherwise :class:`~trt_edge.errors.VerificationError` is raised
    with the comparison table.
    """
    gs = gs_module()
    options = options or SparsifyOptions()
    ctx = PassContext(options={PASS_NAME: dataclasses.asdict(options)}, protected=set(protected or ()))
    graph = sparsify(gs.import_onnx(model), ctx)
    out = gs.export_onnx(graph, do_type_check=False)
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(o for o in model.opset_import if o.domain != DOMAIN)
    out.opset_import.append(onnx.helper.make_opsetid(DOMAIN, 1))
    out.producer_name, out.producer_version = model.producer_name, model.producer_version
    stats = ctx.stats.get(PASS_NAME, {})
    result = SparsifyResult(out, list(stats.get("layers", [])), int(stats.get("replaced", 0)))
    if verify_feeds:
        from ...numerics import FP32_EXPORT, assert_close
        from ...ort_exec import run_model
        from ...sparse.ort import make_session
        session = make_session(out)
        names = [o.name for o in session.get_outputs()]
        reports = []
        for i, feed in enumerate(verify_feeds):
            ref = run_model(model, dict(feed), optimization="all")
            got = dict(zip(names, session.run(names, dict(feed))))
            reports.append(assert_close(got, ref, tolerance or FP32_EXPORT,
                                        what=f"sparsified vs dense outputs (feed {i})"))
        result.verification = reports
    return result


def densify_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The dense fallback: every SparseLinear node back to MatMul (+ Add) with a dense weight.

    For runtimes that have neither the plugin nor the custom op; exact inverse of the
    compression (the weights are bit-identical to the pruned dense ones).
    """
    from ...sparse.formats import to_dense
    from ...sparse.ort import weight_from_node_arrays
    gs = gs_module()
    graph = gs.import_onnx(model)
    for node in list(graph.nodes):
        if node.op != OP_TYPE or node.domain != DOMAIN:
            continue
        x, vals, ci, rp, bias = node.inputs
        a = node.attrs
        w = to_dense(weight_from_node_arrays(
            constant_value(vals), constant_value(ci).astype(np.int32),
            constant_value(rp).astype(np.int32), fmt=a["format"],
            block=(int(a["block_rows"]), int(a["block_cols"])),
            shape=(int(a["out_features"]), int(a["in_features"]))))
        out = node.outputs[0]
        node.outputs.clear()
        node.inputs.clear()
        mid = gs.Variable(f"{node.name}.dense_out", dtype=out.dtype)
        graph.nodes.append(gs.Node("MatMul", name=f"{node.name}.dense", inputs=[
            x, gs.Constant(f"{node.name}.dense_weight", np.ascontiguousarray(w.T))], outputs=[mid]))
        graph.nodes.append(gs.Node("Add", name=f"{node.name}.dense_bias",
                                   inputs=[mid, gs.Constant(f"{node.name}.dense_bias_value",
                                                            constant_value(bias))], outputs=[out]))
    graph.cleanup().toposort()
    out_model = gs.export_onnx(graph, do_type_check=False)
    out_model.ir_version = model.ir_version
    del out_model.opset_import[:]
    out_model.opset_import.extend(o for o in model.opset_import if o.domain != DOMAIN)
    return out_model
