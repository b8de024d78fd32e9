"""Fixtures of the TFLite tests: MediaPipe's real models, photos, one INT8 model made by LiteRT.

Skips (with the install line) where the tflite extra or the mediapipe model wheel is missing.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from tflite_helpers import CALIBRATION_PHOTOS, photo

NEEDS = [("tflite", "pip install 'trt-edge[tflite]'"), ("ai_edge_litert", "pip install 'trt-edge[tflite]'"),
         ("mediapipe", "pip install --no-deps mediapipe==0.10.14")]


def _missing() -> str | None:
    for mod, fix in NEEDS:
        if importlib.util.find_spec(mod) is None:
            return f"'{mod}' is not installed ({fix})"
    return None


@pytest.fixture(scope="session")
def mp_models() -> dict[str, Path]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from trt_edge.tflite.models import mediapipe_models
    return mediapipe_models()


@pytest.fixture(scope="session")
def iris_int8(mp_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """iris_landmark quantized to full INT8 by LiteRT's own post-training quantizer."""
    from trt_edge.tflite.litert_quant import quantize_int8
    out = tmp_path_factory.mktemp("int8") / "iris_landmark_int8.tflite"
    quantize_int8(mp_models["iris_landmark"], [[photo((64, 64), p)] for p in CALIBRATION_PHOTOS], out)
    return out
