"""Options of the TFLite importer."""
from __future__ import annotations

import dataclasses

from ..errors import InvalidInputError


@dataclasses.dataclass(frozen=True)
class ImportOptions:
    """How to convert a .tflite model to ONNX.

    ``nchw``: declare 4-D inputs/outputs NCHW (no boundary transposes; your
    pre-processing must then produce NCHW). The default keeps TFLite's NHWC interface,
    so the same arrays feed the .tflite and the .onnx (``trt-edge compare`` works on the
    pair as is); inside, the graph is NCHW either way, with one Transpose per 4-D input
    and output.
    ``symmetric_activations``: re-express asymmetric int8/uint8 activations (TFLite's
    usual zero points) as symmetric int8 covering the same range, which TensorRT needs
    for explicit Q/DQ; costs up to one bit of resolution, so the check against LiteRT is
    then one *new* step. Asymmetric (e.g. legacy uint8) *weights* are then kept as exact
    float weights, since TensorRT's Q/DQ weights are symmetric int8. Off by default: the
    model's own scales and zero points are kept exactly.
    ``verify``: compare the ONNX model with LiteRT's interpreter on two random feeds (or
    the given ones); a mismatch raises and writes nothing.
    """

    nchw: bool = False
    symmetric_activations: bool = False
    opset: int = 17
    verify: bool = True

    def __post_init__(self) -> None:
        if not 13 <= self.opset <= 21:
            raise InvalidInputError(f"opset {self.opset} is out of the supported range 13..21 "
                                    "(17 is what TensorRT 8.6+ and ONNX Runtime both parse).")
