"""torch -> ONNX export with verification against torch in ONNX Runtime."""
from .exporter import ExportResult, export_onnx, verification_feeds
from .options import EXPORTERS, ExportOptions

__all__ = ["ExportOptions", "ExportResult", "export_onnx", "verification_feeds", "EXPORTERS"]
