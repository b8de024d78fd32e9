"""Real .tflite models that install offline: Google MediaPipe's perception models.

``mediapipe==0.10.14`` (installed ``--no-deps``: only its files are used, the
package itself is never imported; newer wheels ship no .tflite) carries 14 models
under ``mediapipe/modules/**``. Which of them LiteRT can run is a fact of LiteRT,
checked where it matters, not assumed here.
"""
from __future__ import annotations

from pathlib import Path

from ..data._locate import package_dir

MEDIAPIPE_PIN = "mediapipe==0.10.14"


def mediapipe_models() -> dict[str, Path]:
    """Model name (file stem) -> path of every .tflite in the installed mediapipe wheel."""
    root = package_dir("mediapipe", MEDIAPIPE_PIN, no_deps=True) / "modules"
    return {p.stem: p for p in sorted(root.rglob("*.tflite"))}
