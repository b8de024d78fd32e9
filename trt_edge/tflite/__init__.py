"""TensorFlow Lite / LiteRT interop: import .tflite models as verified ONNX.

``import_tflite("m.tflite", "m.onnx")`` reads the flatbuffer (``tflite`` package),
converts every operator with our own converter (``converter.py``: NHWC interface,
NCHW inside; quantized models as explicit Q/DQ with the model's scales), checks the
result against LiteRT's interpreter and writes the file with a sidecar. Needs
``pip install 'trt-edge[tflite]'``; nothing here is imported by ``import trt_edge``.
"""
from .importer import ImportResult, import_tflite
from .options import ImportOptions

__all__ = ["ImportOptions", "ImportResult", "import_tflite"]
