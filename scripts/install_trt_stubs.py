#!/usr/bin/env python3
"""Install ``tensorrt-stubs`` as PEP 561 stub packages mypy can use.

The published ``tensorrt-stubs`` wheel (10.8 to 10.13) puts its ``.pyi`` files in
plain ``tensorrt/`` and ``tensorrt_bindings/`` folders. That has two effects:
mypy treats tensorrt as an untyped package (with ``ignore_missing_imports`` it
silently becomes ``Any``, so nothing is checked) and ``import tensorrt``
*succeeds* as an empty namespace package on machines without TensorRT. The
generated stubs also have three syntax faults mypy rejects.

This script:

1. copies the stubs into ``tensorrt-stubs/`` and ``tensorrt_bindings-stubs/``
   (PEP 561 stub-only packages, found by mypy next to the real packages),
2. patches the three faults (parameters named ``in``; ``add_scale_nd``'s
   ``channel_axis`` without a default after defaulted parameters;
   ``import tensorrt_libs``),
3. removes the plain stub-only ``tensorrt/`` and ``tensorrt_bindings/`` folders
   when they hold nothing but ``.pyi`` files (never a real TensorRT install), so
   ``import tensorrt`` fails cleanly where TensorRT is absent.

It is idempotent: a second run finds the stub packages in place and does nothing
(unless a re-install of ``tensorrt-stubs`` brought the plain folders back, in
which case it redoes the copy from them). Usage::

    python scripts/install_trt_stubs.py [--site-packages DIR] [--target DIR] [--keep-plain]
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import sysconfig
from pathlib import Path

PACKAGES = ("tensorrt", "tensorrt_bindings")
MARKER = "# patched by trt_edge scripts/install_trt_stubs.py\n"

# `def f(self, in: list[...], out: ...)` -> `in_`; only in parameter lists, never
# in docstrings (`:arg in:` lines start with spaces and ':').
_IN_PARAM = re.compile(r"([(,]\s*)in(\s*:)")
_CHANNEL_AXIS = re.compile(r"(power: Weights = None, )channel_axis: int\)")
_TRT_LIBS = re.compile(r"^import tensorrt_libs as tensorrt_libs$", re.MULTILINE)


def patch_stub_text(text: str) -> str:
    """Return ``text`` with the three known syntax faults fixed (idempotent)."""
    out_lines = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("def "):
            line = _IN_PARAM.sub(r"\1in_\2", line)
            line = _CHANNEL_AXIS.sub(r"\1channel_axis: int = ...)", line)
        out_lines.append(line)
    text = "".join(out_lines)
    # tensorrt_libs is NVIDIA's wheel of shared libraries: no stubs exist for it.
    text = _TRT_LIBS.sub("from typing import Any as _Any\ntensorrt_libs: _Any", text)
    if not text.startswith(MARKER):
        text = MARKER + text
    return text


def is_stub_only(folder: Path) -> bool:
    """True if ``folder`` holds only ``.pyi`` files (and caches): not a real install."""
    if not folder.is_dir():
        return False
    for p in folder.rglob("*"):
        if p.is_dir() or "__pycache__" in p.parts:
            continue
        if p.suffix != ".pyi":
            return False
    return True


def install(site_packages: Path, target: Path, keep_plain: bool = False) -> list[str]:
    """Create/refresh the stub packages in ``target``; returns what was done."""
    actions: list[str] = []
    for pkg in PACKAGES:
        plain = site_packages / pkg
        stub_pkg = target / f"{pkg}-stubs"
        if is_stub_only(plain):
            tmp = target / f".{pkg}-stubs.tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            for src in sorted(plain.rglob("*.pyi")):
                dest = tmp / src.relative_to(plain)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(patch_stub_text(src.read_text(encoding="utf-8")), encoding="utf-8")
            if stub_pkg.exists():
                shutil.rmtree(stub_pkg)
            tmp.rename(stub_pkg)
            actions.append(f"installed {stub_pkg}")
            if not keep_plain and target == site_packages:
                shutil.rmtree(plain)
                actions.append(f"removed stub-only {plain} (so `import {pkg}` fails cleanly)")
        elif stub_pkg.is_dir():
            # Already installed: make sure the patches are present (idempotent).
            for f in stub_pkg.rglob("*.pyi"):
                text = f.read_text(encoding="utf-8")
                patched = patch_stub_text(text)
                if patched != text:
                    f.write_text(patched, encoding="utf-8")
                    actions.append(f"re-patched {f}")
        elif plain.is_dir():
            actions.append(f"left {plain} alone: it is a real {pkg} install, not stubs")
        else:
            actions.append(f"no {pkg} stubs found in {site_packages}: "
                           "run `pip install --no-deps tensorrt-stubs` first")
    return actions


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--site-packages", type=Path, default=Path(sysconfig.get_paths()["purelib"]),
                    help="where pip installed tensorrt-stubs (default: this interpreter's)")
    ap.add_argument("--target", type=Path, default=None,
                    help="where to write the *-stubs packages (default: --site-packages); "
                         "use a scratch folder plus MYPYPATH to test without touching the env")
    ap.add_argument("--keep-plain", action="store_true",
                    help="do not remove the plain stub-only tensorrt/ folders")
    args = ap.parse_args(argv)
    target = args.target or args.site_packages
    target.mkdir(parents=True, exist_ok=True)
    actions = install(args.site_packages, target, keep_plain=args.keep_plain)
    for a in actions:
        print(f"install_trt_stubs: {a}")
    if not actions:
        print("install_trt_stubs: nothing to do")
    missing = [a for a in actions if a.startswith("no ")]
    return 1 if len(missing) == len(PACKAGES) else 0


if __name__ == "__main__":
    sys.exit(main())
