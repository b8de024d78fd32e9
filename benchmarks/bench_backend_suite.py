"""``trt-edge optimize`` on ONNX's own backend test suites (node, simple, pytorch-converted/-operator).

For every test model that ONNX Runtime passes (loads, runs on the test's inputs and
matches the expected outputs), run :func:`trt_edge.graph.optimize` with default
options (generated verification feeds, every default pass) and then compare the
optimized model with the original on the test's own inputs, in ONNX Runtime:

* refused: ``optimize`` raised (the reason is counted by its first words);
* changed: the optimized model's outputs differ from the original's (FP32 tolerance,
  non-float outputs exactly);
* kept: everything else.

The node suite comes from ``onnx.backend.test.case.node.collect_testcases`` (the
installed wheel has no node data files); the others from
``onnx/backend/test/data/{simple,pytorch-converted,pytorch-operator}``.

    python benchmarks/bench_backend_suite.py --json benchmarks/results/backend_suite.json
    python benchmarks/bench_backend_suite.py --sample 40 --seed 1     # a quick sample
"""
from __future__ import annotations

import argparse
import collections
import datetime as _dt
import glob
import importlib.util
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx
from onnx import numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from trt_edge.artifacts import atomic_write_json, machine_info, tool_versions  # noqa: E402
from trt_edge.graph import OptimizeOptions, optimize  # noqa: E402
from trt_edge.graph.verify import compare_all  # noqa: E402
from trt_edge.numerics import FP32_EXACT, Tolerance  # noqa: E402
from trt_edge.ort_exec import make_session, run_model  # noqa: E402

SUITES = ("node", "simple", "pytorch-converted", "pytorch-operator")


def _data_dir() -> Path:
    return Path(importlib.util.find_spec("onnx").origin).parent / "backend" / "test" / "data"


def _read_pb(path: str, type_proto: onnx.TypeProto | None) -> Any:
    data = open(path, "rb").read()
    which = type_proto.WhichOneof("value") if type_proto is not None else "tensor_type"
    if which == "sequence_type":
        seq = onnx.SequenceProto()
        seq.ParseFromString(data)
        return numpy_helper.to_list(seq)
    if which == "optional_type":
        opt = onnx.OptionalProto()
        opt.ParseFromString(data)
        return numpy_helper.to_optional(opt)
    t = onnx.TensorProto()
    t.ParseFromString(data)
    return numpy_helper.to_array(t)


def iter_cases(suites: tuple[str, ...] = SUITES) -> Iterator[tuple[str, str, onnx.ModelProto,
                                                               list[tuple[dict[str, Any], list[Any]]]]]:
    """(suite, name, model, [(inputs by name, expected outputs)]) for each test model."""
    if "node" in suites:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from onnx.backend.test.case import node
            cases = node.collect_testcases(None)
        for case in cases:
            model = case.model
            inits = {i.name for i in model.graph.initializer}
            names = [i.name for i in model.graph.input if i.name not in inits]
            sets = []
            for inputs, outputs in case.data_sets or ():
                sets.append((dict(zip(names, inputs)), list(outputs)))
            yield "node", case.name, model, sets
    for suite in suites:
        if suite == "node":
            continue
        for d in sorted(glob.glob(str(_data_dir() / suite / "*"))):
            path = os.path.join(d, "model.onnx")
            if not os.path.exists(path):
                continue
            model = onnx.load(path)
            inits = {i.name for i in model.graph.initializer}
            ins = [i for i in model.graph.input if i.name not in inits]
            sets = []
            for ds in sorted(glob.glob(os.path.join(d, "test_data_set_*"))):
                inputs = {}
                for k, vi in enumerate(ins):
                    p = os.path.join(ds, f"input_{k}.pb")
                    if os.path.exists(p):
                        inputs[vi.name] = _read_pb(p, vi.type)
                outs = [_read_pb(os.path.join(ds, f"output_{k}.pb"), model.graph.output[k].type)
                        for k in range(len(model.graph.output))
                        if os.path.exists(os.path.join(ds, f"output_{k}.pb"))]
                sets.append((inputs, outs))
            yield suite, os.path.basename(d), model, sets


def _close(a: Any, b: Any, rtol: float, atol: float) -> bool:
    diffs = compare_all({"y": a}, {"y": b}, Tolerance(rtol, atol))
    return all(d.ok for d in diffs)


def ort_passes(model: onnx.ModelProto, sets: list[tuple[dict[str, Any], list[Any]]]) -> list[dict[str, Any]] | None:
    """ORT's outputs on each data set when ORT runs the model and matches the expected outputs."""
    if not sets:
        return None
    try:
        session = make_session(model)
        results = []
        for inputs, expected in sets:
            out = run_model(session, inputs)
            names = [o.name for o in model.graph.output]
            for name, exp in zip(names, expected):
                if not _close(out[name], exp, 1e-3, 1e-5):
                    return None
            results.append(out)
        return results
    except Exception:  # noqa: BLE001 - a model ORT does not pass is out of scope
        return None


def run_case(model: onnx.ModelProto, sets: list[tuple[dict[str, Any], list[Any]]],
             references: list[dict[str, Any]]) -> tuple[str, str, float]:
    """('kept'|'changed'|'refused', detail, seconds) for one model ORT passes."""
    t = time.perf_counter()
    try:
        out, _ = optimize(model, OptimizeOptions())
    except Exception as exc:  # noqa: BLE001 - counted
        return "refused", f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}", time.perf_counter() - t
    seconds = time.perf_counter() - t
    try:
        session = make_session(out)
        for (inputs, _), ref in zip(sets, references):
            got = run_model(session, inputs)
            diffs = compare_all(got, ref, FP32_EXACT)
            bad = [d for d in diffs if not d.ok]
            if bad:
                return "changed", f"{bad[0].name}: {bad[0].detail}", seconds
    except Exception as exc:  # noqa: BLE001
        return "changed", f"optimized model fails: {str(exc).splitlines()[0][:160]}", seconds
    return "kept", "", seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--sample", type=int, default=0, help="only this many models (random, per --seed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    suites = tuple(s for s in args.suites.split(",") if s)
    cases = list(iter_cases(suites))
    if args.sample:
        rng = np.random.default_rng(args.seed)
        cases = [cases[i] for i in sorted(rng.choice(len(cases), min(args.sample, len(cases)), replace=False))]
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    rows = []
    reasons: collections.Counter[str] = collections.Counter()
    t0 = time.perf_counter()
    for i, (suite, name, model, sets) in enumerate(cases):
        refs = ort_passes(model, sets)
        if refs is None:
            counts[suite]["ort_fails"] += 1
            continue
        status, detail, seconds = run_case(model, sets, refs)
        counts[suite][status] += 1
        rows.append({"suite": suite, "name": name, "status": status, "detail": detail,
                     "seconds": round(seconds, 3)})
        if status != "kept":
            reasons[f"{status}: {detail[:90]}"] += 1
            print(f"{suite:<18}{name:<60}{status}: {detail}", flush=True)
        if (i + 1) % 200 == 0:
            print(f"... {i + 1}/{len(cases)} ({time.perf_counter() - t0:.0f}s)", flush=True)
    total = collections.Counter()
    for c in counts.values():
        total.update(c)
    passed = total["kept"] + total["changed"] + total["refused"]
    print(f"\n{'suite':<20}{'ORT passes':>11}{'kept':>7}{'changed':>9}{'refused':>9}")
    for suite in suites:
        c = counts[suite]
        n = c["kept"] + c["changed"] + c["refused"]
        print(f"{suite:<20}{n:>11}{c['kept']:>7}{c['changed']:>9}{c['refused']:>9}")
    print(f"{'total':<20}{passed:>11}{total['kept']:>7}{total['changed']:>9}{total['refused']:>9}"
          f"   refused {100 * total['refused'] / max(passed, 1):.2f}%, "
          f"{time.perf_counter() - t0:.0f}s, load {os.getloadavg()[0]:.1f}")
    if args.json:
        atomic_write_json(args.json, {
            "when": _dt.datetime.now(_dt.timezone.utc).isoformat(), "machine": machine_info(),
            "versions": tool_versions(), "suites": {s: dict(counts[s]) for s in suites},
            "total": dict(total), "refused_fraction": total["refused"] / max(passed, 1),
            "changed": total["changed"], "reasons": dict(reasons.most_common()), "cases": rows})
    return 0 if total["changed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
