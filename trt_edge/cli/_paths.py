"""Input/output path checks every command runs before its long work.

``check_paths(inputs, outputs)`` refuses, with a message naming the option to
change, any output that would replace an input (compared after resolving
symlinks, ``./``, ``..`` and hard links), an input's sidecar, or another output
of the same command; an output whose folder cannot be written (a read-only
folder, a path under a regular file, a directory where a file should go); and a
derived output (one the user did not name, e.g. ``build``'s ``NAME.onnx`` when
TensorRT is missing) that would replace a file trt-edge did not write.

New subcommands use it like this::

    check_paths({"the model": args.model, "--data": args.data},
                {"-o": Output(args.output, sidecar=True), "--json": args.json})
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Union

from ..artifacts import SIDECAR_SUFFIX
from ..errors import InvalidInputError

PathLike = Union[str, "os.PathLike[str]"]


@dataclasses.dataclass(frozen=True)
class Output:
    """One file a command writes.

    ``sidecar``: a ``<path>.json`` is written beside it; ``companions``: other
    files written beside it (``.data``, ``.log``); ``derived``: the user did not
    name this path, so an existing file there is only replaced when trt-edge wrote it.
    """

    path: PathLike | None
    sidecar: bool = False
    companions: tuple[str, ...] = ()
    derived: bool = False

    def files(self) -> list[tuple[str, Path]]:
        """(what, path) for the file and everything written beside it."""
        if self.path is None:
            return []
        p = Path(self.path)
        out = [("", p)]
        if self.sidecar:
            out.append(("its sidecar ", p.with_name(p.name + SIDECAR_SUFFIX)))
        out += [(f"its {suffix} file ", p.with_name(p.name + suffix)) for suffix in self.companions]
        return out


def _key(p: Path) -> tuple:
    """Identity of a path: the inode when it exists (hard links, aliases), else the resolved path."""
    try:
        st = os.stat(p)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", str(_resolved(p)))


def _resolved(p: Path) -> Path:
    try:
        return p.expanduser().resolve(strict=False)
    except (OSError, RuntimeError):  # a symlink loop
        return Path(os.path.abspath(p))


def _ours(p: Path) -> bool:
    """True if ``p`` has a trt-edge sidecar that names it (so replacing it is expected)."""
    side = p.with_name(p.name + SIDECAR_SUFFIX)
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(meta, dict) and meta.get("artifact") == p.name and "kind" in meta


def check_writable(path: PathLike, option: str) -> None:
    """Refuse ``path`` as an output if a file cannot be created there."""
    p = Path(path)
    shown = os.fsdecode(p)
    if p.is_dir():
        raise InvalidInputError(f"{option} '{shown}' is a directory: give a file name inside it.")
    parent = _resolved(p).parent
    probe = parent
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InvalidInputError(f"{option} '{shown}' is under '{probe}', which is a file, not a folder: "
                                "choose an output path in a folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{option} '{shown}': the folder '{probe}' is not writable: choose an "
                                "output path in a folder you can write to.")


def check_paths(inputs: Mapping[str, PathLike | None] | Iterable[tuple[str, PathLike | None]],
                outputs: Mapping[str, Output | PathLike | None]) -> None:
    """Validate a command's outputs against its inputs and each other (see the module docstring).

    ``inputs`` maps a description ("the model", "--data") to a path (None: not given);
    each input's existing sidecar is protected too. ``outputs`` maps the option that
    names a file ("-o", "--json") to an :class:`Output` or a plain path.
    """
    protected: dict[tuple, str] = {}
    pairs = inputs.items() if isinstance(inputs, Mapping) else inputs
    for what, path in pairs:
        if path is None:
            continue
        p = Path(path)
        protected.setdefault(_key(p), f"the input {what} '{os.fsdecode(p)}'")
        side = p.with_name(p.name + SIDECAR_SUFFIX)
        if side.is_file():
            protected.setdefault(_key(side), f"the sidecar of the input {what} '{os.fsdecode(side)}'")
    written: dict[tuple, str] = {}
    for option, out in outputs.items():
        if out is None:
            continue
        if not isinstance(out, Output):
            out = Output(out)
        shown = os.fsdecode(out.path) if out.path is not None else ""
        for what, p in out.files():
            label = f"{option} '{shown}'" + (f" ({what.strip()} '{os.fsdecode(p)}')" if what else "")
            key = _key(p)
            choose = option.split(" (")[0]
            if key in protected:
                raise InvalidInputError(f"{label} would overwrite {protected[key]}: choose another {choose}.")
            if key in written:
                raise InvalidInputError(f"{label} is the same file as {written[key]}: give each output "
                                        "its own path.")
            written[key] = label
            check_writable(p, option)
            if out.derived and not what and p.exists() and not _ours(p):
                raise InvalidInputError(
                    f"{label} already exists and was not written by trt-edge; refusing to replace it. "
                    f"Move it away or choose another {choose}.")


__all__ = ["Output", "check_paths", "check_writable"]
