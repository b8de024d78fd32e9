from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from ..errors import InvalidInputError
from ..numerics import FP32_EXPORT, Tolerance

EXPORTERS = ("dynamo", "torchscript")


@dataclasses.dataclass
class ExportOptions:
    """How to export a torch module to ONNX.

    ``dynamic_axes`` maps an input/output name to ``{axis: dim_name}``; by default
    axis 0 of every input and output is a dynamic ``batch``. ``exporter``:
    "dynamo" (torch.export based, the torch 2.13 default) or "torchscript"
    (the tracing exporter, still the most robust for older TensorRT parsers).
    ``external_data``: write weights to ``<file>.data`` (needed above 2 GB).
    ``verify``: run the ONNX file in ONNX Runtime and compare with torch at two
    batch sizes (and two sequence lengths when that axis is dynamic). The default
    tolerance (rtol 1e-4, atol 1e-5) is looser than a graph pass's because torch
    and ONNX Runtime use different kernels that sum in different orders
    (MobileNetV2 logits differ by ~1e-5 absolute, SQNR ~120 dB).
    """

    input_names: Sequence[str] | None = None
    output_names: Sequence[str] | None = None
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None
    dynamic_batch: bool = True
    opset: int = 18
    exporter: str = "dynamo"
    external_data: bool = False
    verify: bool = True
    verify_batch_sizes: tuple[int, int] | None = None  # default: (sample batch, sample batch + 2)
    tolerance: Tolerance = FP32_EXPORT
    do_constant_folding: bool = True

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise InvalidInputError(f"exporter must be one of {EXPORTERS}, got '{self.exporter}'.")
        if not 7 <= self.opset <= 23:
            raise InvalidInputError(f"opset {self.opset} is out of the supported range 7..23; "
                                    "TensorRT 10 parses opsets up to 20-22 depending on version, 17-18 is safe.")
