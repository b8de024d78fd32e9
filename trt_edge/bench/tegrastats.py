"""Jetson ``tegrastats`` parsing and sampling, and the board's power mode.

``tegrastats`` prints one line per interval. Its documented fields (NVIDIA's
Jetson Linux / DRIVE OS "tegrastats utility" pages) that we use:

* ``RAM X/YMB (lfb NxZMB)`` and ``SWAP X/YMB (cached ZMB)``: memory in MB;
* ``CPU [X%@F,Y%@F,off,...]``: per-core load (%) at frequency F (MHz), ``off``
  for a powered-down core (older releases: ``CPU [X%,Y%]@F``);
* ``EMC_FREQ X%@F`` (memory controller), ``GR3D_FREQ X%@F`` (the GPU; on
  JetPack 7 ``X%@[F,F]`` per GPC, on Thor ``@[F,...]`` without a load);
* ``NAME@T.TC`` temperatures (JetPack 7 adds ``/max``);
* power rails: JetPack 5+ ``VDD_GPU_SOC 5139mW/5139mW[/5139mW]`` (instant/average[/max]),
  JetPack 4 ``POM_5V_IN 1750/1628`` (mW, instant/average).

Board power: ``VDD_IN`` (Orin NX/Nano, Xavier NX, TX2) or ``POM_5V_IN``
(Nano) is the module's input; where neither exists (AGX Orin, AGX Xavier)
we sum every rail and say so (``power_source``).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import re
import shutil
import subprocess
import threading
import time
from typing import Any, Iterable, Sequence

from ..errors import InvalidInputError, TrtEdgeError

log = logging.getLogger(__name__)

_TIMESTAMP = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s+")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB(?: \(cached (\d+)MB\))?")
_CPU = re.compile(r"\bCPU \[([^\]]*)\](?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D_FREQ (?:(\d+)%)?(?:@\[?([\d,]+)\]?)?")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?![\w/])")
_NOT_RAILS = {"RAM", "SWAP", "IRAM", "EMC_FREQ", "GR3D_FREQ"}
_INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")


@dataclasses.dataclass
class TegraSample:
    """One parsed ``tegrastats`` line (fields absent on a board are None/empty)."""

    timestamp: _dt.datetime | None = None
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    swap_used_mb: int | None = None
    swap_total_mb: int | None = None
    cpu_load_pct: list[int | None] = dataclasses.field(default_factory=list)  # None = core off
    cpu_freq_mhz: list[int | None] = dataclasses.field(default_factory=list)
    gpu_load_pct: int | None = None
    gpu_freq_mhz: int | None = None
    emc_load_pct: int | None = None
    temperatures_c: dict[str, float] = dataclasses.field(default_factory=dict)
    rails_mw: dict[str, int] = dataclasses.field(default_factory=dict)  # instantaneous
    rails_avg_mw: dict[str, int] = dataclasses.field(default_factory=dict)
    received_s: float | None = None  # time.monotonic() when the sampler read the line

    @property
    def power_source(self) -> str | None:
        for rail in _INPUT_RAILS:
            if rail in self.rails_mw:
                return rail
        return "sum of rails" if self.rails_mw else None

    @property
    def power_mw(self) -> int | None:
        """Board input power when a rail measures it, else the sum of all rails."""
        for rail in _INPUT_RAILS:
            if rail in self.rails_mw:
                return self.rails_mw[rail]
        return sum(self.rails_mw.values()) if self.rails_mw else None


def parse_line(line: str) -> TegraSample:
    """Parse one tegrastats line. Raises InvalidInputError if it has no tegrastats field."""
    s = TegraSample()
    m = _TIMESTAMP.match(line)
    if m:
        s.timestamp = _dt.datetime.strptime(m.group(1), "%m-%d-%Y %H:%M:%S")
    if m := _RAM.search(line):
        s.ram_used_mb, s.ram_total_mb = int(m.group(1)), int(m.group(2))
    if m := _SWAP.search(line):
        s.swap_used_mb, s.swap_total_mb = int(m.group(1)), int(m.group(2))
    if m := _CPU.search(line):
        common = int(m.group(2)) if m.group(2) else None
        for core in m.group(1).split(","):
            core = core.strip()
            if not core or core == "off":
                s.cpu_load_pct.append(None)
                s.cpu_freq_mhz.append(None)
                continue
            load, _, freq = core.partition("@")
            s.cpu_load_pct.append(int(load.rstrip("%")))
            s.cpu_freq_mhz.append(int(freq) if freq else common)
    if m := _GR3D.search(line):
        s.gpu_load_pct = int(m.group(1)) if m.group(1) else None
        if m.group(2):
            s.gpu_freq_mhz = max(int(f) for f in m.group(2).split(",") if f)
    if m := _EMC.search(line):
        s.emc_load_pct = int(m.group(1))
    for name, temp in _TEMP.findall(line):
        s.temperatures_c.setdefault(name, float(temp))
    for name, cur, avg, _mx in _RAIL.findall(line):
        if name in _NOT_RAILS:
            continue
        s.rails_mw[name] = int(cur)
        s.rails_avg_mw[name] = int(avg)
    if s.ram_used_mb is None and not s.rails_mw and s.gpu_load_pct is None and s.gpu_freq_mhz is None:
        raise InvalidInputError(f"Not a tegrastats line: {line[:80]!r}")
    return s


def summarize(samples: Sequence[TegraSample]) -> dict[str, Any]:
    """Mean/max power, energy (trapezoid over sampler time), peak RAM, mean GPU load."""
    out: dict[str, Any] = {"samples": len(samples)}
    if not samples:
        return out
    power = [(s.received_s, s.power_mw) for s in samples if s.power_mw is not None]
    if power:
        watts = [p / 1000.0 for _, p in power]
        out["power_source"] = samples[-1].power_source
        out["power_mean_w"] = sum(watts) / len(watts)
        out["power_max_w"] = max(watts)
        timed = [(t, w) for (t, _), w in zip(power, watts) if t is not None]
        if len(timed) >= 2 and len(timed) == len(power):
            # trapezoid rule over the sampler's receive times
            out["energy_j"] = sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(timed, timed[1:]))
            out["duration_s"] = timed[-1][0] - timed[0][0]
        rails: dict[str, list[int]] = {}
        for s in samples:
            for k, v in s.rails_mw.items():
                rails.setdefault(k, []).append(v)
        out["rails_mean_mw"] = {k: sum(v) / len(v) for k, v in rails.items()}
    ram = [s.ram_used_mb for s in samples if s.ram_used_mb is not None]
    if ram:
        out["ram_peak_mb"] = max(ram)
        out["ram_total_mb"] = samples[-1].ram_total_mb
    gpu = [s.gpu_load_pct for s in samples if s.gpu_load_pct is not None]
    if gpu:
        out["gpu_load_mean_pct"] = sum(gpu) / len(gpu)
    temps = [max(s.temperatures_c.values()) for s in samples if s.temperatures_c]
    if temps:
        out["temperature_max_c"] = max(temps)
    return out


def parse_lines(lines: Iterable[str]) -> list[TegraSample]:
    """Parse many lines, skipping blank and non-tegrastats ones."""
    out = []
    for ln in lines:
        if ln.strip():
            try:
                out.append(parse_line(ln))
            except InvalidInputError:
                log.debug("skipping non-tegrastats line %r", ln[:60])
    return out


def tegrastats_available() -> bool:
    return shutil.which("tegrastats") is not None


class TegrastatsSampler:
    """Runs ``tegrastats --interval MS`` in the background and parses its lines.

    ``with TegrastatsSampler(100) as ts: run(); print(ts.summary())``. ``close()``
    is safe twice. Raises TrtEdgeError on start if tegrastats is missing.
    """

    def __init__(self, interval_ms: int = 100, command: Sequence[str] | None = None) -> None:
        if interval_ms < 1:
            raise InvalidInputError(f"interval_ms must be >= 1, got {interval_ms}.")
        self.interval_ms = interval_ms
        self.command = list(command) if command else ["tegrastats", "--interval", str(interval_ms)]
        self.samples: list[TegraSample] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> "TegrastatsSampler":
        if shutil.which(self.command[0]) is None:
            raise TrtEdgeError(f"'{self.command[0]}' not found: tegrastats exists only on Jetson "
                               "(Jetson Linux). Run without power sampling elsewhere.")
        self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True, bufsize=1)
        self._thread = threading.Thread(target=self._read, name="tegrastats", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                sample = parse_line(line)
            except InvalidInputError:
                continue
            sample.received_s = time.monotonic()
            with self._lock:
                self.samples.append(sample)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    stop = close

    def __enter__(self) -> "TegrastatsSampler":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return summarize(list(self.samples))


_NVPMODEL_MODE = re.compile(r"NV Power Mode:\s*(\S.*?)\s*$", re.MULTILINE)


def parse_nvpmodel(output: str) -> dict[str, Any]:
    """Parse ``nvpmodel -q``: ``NV Power Mode: MAXN`` then the mode id on the next line."""
    m = _NVPMODEL_MODE.search(output)
    if not m:
        raise InvalidInputError(f"Unrecognised nvpmodel output: {output[:80]!r}")
    rest = output[m.end():].split()
    mode_id = int(rest[0]) if rest and rest[0].isdigit() else None
    return {"name": m.group(1), "id": mode_id}


def power_mode() -> dict[str, Any] | None:
    """The Jetson power mode (``nvpmodel -q``), or None off Jetson / when unreadable."""
    exe = shutil.which("nvpmodel")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=10).stdout
        return parse_nvpmodel(out)
    except (OSError, subprocess.SubprocessError, InvalidInputError) as exc:
        log.warning("could not read the Jetson power mode: %s", exc)
        return None
