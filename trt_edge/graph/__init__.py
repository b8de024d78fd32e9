"""Graph passes on onnx-graphsurgeon graphs, a registry and a checked pipeline."""
from .registry import GraphPass, PassContext, default_pipeline, get_pass, list_passes, register_pass

__all__ = ["GraphPass", "PassContext", "register_pass", "get_pass", "list_passes", "default_pipeline"]
