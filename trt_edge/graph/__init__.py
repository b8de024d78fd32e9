"""Graph passes on onnx-graphsurgeon graphs, a registry and a checked pipeline."""
from .pipeline import OptimizeOptions, optimize, optimize_file
from .registry import GraphPass, PassContext, default_pipeline, get_pass, list_passes, register_pass
from .report import OptimizationReport, PassRecord, op_histogram

__all__ = ["GraphPass", "PassContext", "register_pass", "get_pass", "list_passes", "default_pipeline",
           "OptimizeOptions", "optimize", "optimize_file", "OptimizationReport", "PassRecord",
           "op_histogram"]
