"""Arguments shared by the commands that run a model (bench, compare, eval)."""
from __future__ import annotations

import argparse
import logging
from typing import Any, Mapping, Sequence

from ..errors import InvalidInputError
from ..onnx_io import parse_shapes

log = logging.getLogger("trt_edge")


def add_runner_args(p: argparse.ArgumentParser, inputs: bool = True) -> None:
    g = p.add_argument_group("backend")
    g.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], default="auto",
                   help="auto: .onnx -> ONNX Runtime, .plan/.engine -> TensorRT (default)")
    g.add_argument("--providers", default="CPUExecutionProvider",
                   help="ONNX Runtime execution providers in priority order, comma-separated")
    g.add_argument("--intra-op-threads", type=int, default=0,
                   help="ONNX Runtime threads per operator (0: one per core)")
    g.add_argument("--inter-op-threads", type=int, default=0,
                   help="ONNX Runtime threads across operators (with --parallel-execution)")
    g.add_argument("--parallel-execution", action="store_true", help="ORT_PARALLEL execution mode")
    g.add_argument("--graph-opt", choices=["disable", "basic", "extended", "all"], default="all",
                   help="ONNX Runtime graph optimisation level")
    g.add_argument("--io-binding", dest="io_binding", action="store_const", const=True, default=None,
                   help="bind inputs/outputs explicitly (default: only on device EPs such as CUDA)")
    g.add_argument("--no-io-binding", dest="io_binding", action="store_const", const=False,
                   help="never use IO binding")
    g.add_argument("--no-spinning", action="store_true",
                   help="stop ORT's worker threads busy-waiting (good when sharing the CPU)")
    if inputs:
        d = p.add_argument_group("inputs")
        d.add_argument("--inputs", help=".npz with one array per input name (or a single 'x')")
        d.add_argument("--shapes", action="append",
                       help="random inputs of these shapes: NAME:1x3x224x224[,NAME2:...]")
        d.add_argument("--batch", type=int, help="batch size for inputs with a dynamic leading axis")
        d.add_argument("--dim", action="append", default=[],
                       help="size of a named dynamic dimension, NAME=SIZE (e.g. sequence=128)")
        d.add_argument("--seed", type=int, default=0, help="seed of the random inputs")


def ort_options(args: argparse.Namespace) -> Any:
    from ..runtime.onnxrt import OrtOptions
    return OrtOptions(providers=tuple(p.strip() for p in args.providers.split(",") if p.strip()),
                      intra_op_threads=args.intra_op_threads, inter_op_threads=args.inter_op_threads,
                      execution_mode="parallel" if args.parallel_execution else "sequential",
                      graph_optimization=args.graph_opt, io_binding=args.io_binding,
                      allow_spinning=False if args.no_spinning else None)


def check_runner_paths(args: argparse.Namespace, artifacts: Sequence[tuple[str, Any]],
                       outputs: Mapping[str, Any], data: Sequence[tuple[str, Any]] = ()) -> None:
    """Before a command runs a model: paths ONNX Runtime can open, no output over an input,
    no conflicting input options, a seed NumPy accepts."""
    from ._paths import check_paths

    for what, path in list(artifacts) + list(data):
        if path is None:
            continue
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(f"The path of the {what} {str(path)!r} is not valid UTF-8, which ONNX Runtime "
                                    "cannot open: rename the file (or its folder).") from exc
    if getattr(args, "inputs", None) and getattr(args, "shapes", None):
        raise InvalidInputError("--inputs and --shapes cannot be used together: the arrays in --inputs already "
                                "have their shapes (drop --shapes, or drop --inputs for random data).")
    seed = getattr(args, "seed", None)
    if seed is not None and seed < 0:
        raise InvalidInputError(f"--seed must be >= 0, got {seed}.")
    extra = [("--inputs", args.inputs)] if getattr(args, "inputs", None) else []
    check_paths(list(artifacts) + list(data) + extra, outputs)


def input_options(args: argparse.Namespace) -> Any:
    """The feed options; dynamic dims nothing sets come from the artifact's sidecar (if recorded)."""
    from ..bench.inputs import InputOptions, recorded_shapes
    dims: dict[str, int] = {}
    for item in args.dim:
        name, sep, value = item.partition("=")
        try:
            dims[name] = int(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise InvalidInputError(f"Bad --dim '{item}': write NAME=SIZE, e.g. sequence=128.")
    artifacts = [getattr(args, "artifact", None)] + list(getattr(args, "artifacts", None) or [])[::-1]
    recorded: dict[str, tuple[int, ...]] = {}
    for artifact in artifacts:  # the candidate's record first, then the reference's
        if artifact and not recorded:
            recorded = recorded_shapes(artifact)
    if recorded and not args.inputs:
        log.info("dynamic dimensions not set by --shapes/--dim/--batch come from the sidecar: %s",
                 ", ".join(f"{k}{tuple(v)}" for k, v in recorded.items()))
    return InputOptions(inputs=args.inputs, shapes=parse_shapes(args.shapes), batch=args.batch,
                        dim_values=dims, seed=args.seed, recorded_shapes=recorded)
