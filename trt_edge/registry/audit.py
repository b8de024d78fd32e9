"""Append-only, hash-chained audit log (JSON lines).

Each line is one event (publish, promote, rollback, load, refuse, import, ...) with ``seq``,
``prev`` (the previous line's hash) and ``hash`` (SHA-256 of the line's canonical JSON without
``hash``). Editing a line breaks its hash, removing or reordering lines breaks ``seq``/``prev``,
and cutting lines off the end is caught by the head file (``<log>.head``: the last seq and hash,
replaced atomically after each append). A crash between the append and the head update leaves
the head one entry behind, which verification reports as a lag, not as tampering.

What this does not stop: someone who can rewrite the whole log *and* its head consistently.
Ship the head hash elsewhere (a signed release note, a remote syslog) if that matters.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..artifacts import atomic_write_json, to_jsonable
from ..errors import ArtifactError

GENESIS = "0" * 64


def _line_hash(entry: Mapping[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class AuditProblem:
    line: int          # 1-based line number in the file (0: the head file)
    reason: str


@dataclasses.dataclass(frozen=True)
class AuditReport:
    path: Path
    entries: int
    problems: tuple[AuditProblem, ...]
    head_lag: int = 0  # entries past the head file (a crash between append and head update)

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        if self.ok:
            lag = f" (head file {self.head_lag} entry behind: an interrupted append)" if self.head_lag else ""
            return f"audit log '{self.path}': {self.entries} entries, chain intact{lag}"
        lines = [f"audit log '{self.path}': {len(self.problems)} problem(s) in {self.entries} entries:"]
        lines += [f"  line {p.line}: {p.reason}" if p.line else f"  head: {p.reason}" for p in self.problems]
        return "\n".join(lines)


class AuditLog:
    """``AuditLog(path).append("publish", model="mnist", version=3)``; ``verify_audit_log(path)``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # one writer at a time, across processes
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _last(self) -> tuple[int, str]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return 0, GENESIS
        with open(self.path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            block = min(size, 65536)
            fh.seek(size - block)
            tail = fh.read().splitlines()
        for raw in reversed(tail):
            if raw.strip():
                try:
                    last = json.loads(raw)
                    return int(last["seq"]), str(last["hash"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise ArtifactError(f"The last line of audit log '{self.path}' is damaged ({exc}); run "
                                        "`trt-edge registry audit-verify` and restore the log.") from exc
        return 0, GENESIS

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        with self._locked():
            seq, prev = self._last()
            entry: dict[str, Any] = {
                "seq": seq + 1,
                "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"),
                "event": event,
                **to_jsonable(fields),
                "prev": prev,
            }
            entry["hash"] = _line_hash(entry)
            line = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            atomic_write_json(self.head_path, {"seq": entry["seq"], "hash": entry["hash"]})
            return entry

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(raw) for raw in self.path.read_text(encoding="utf-8").splitlines() if raw.strip()]


def verify_audit_log(path: str | os.PathLike[str]) -> AuditReport:
    log = AuditLog(path)
    if not log.path.exists():
        raise ArtifactError(f"Audit log '{log.path}' does not exist.")
    problems: list[AuditProblem] = []
    prev, seq, count = GENESIS, 0, 0
    last_hash = GENESIS
    for n, raw in enumerate(log.path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not raw.strip():
            continue
        count += 1
        try:
            entry = json.loads(raw)
            got_seq, got_prev, got_hash = int(entry["seq"]), entry["prev"], entry["hash"]
        except (ValueError, KeyError, TypeError):
            problems.append(AuditProblem(n, "not a valid audit entry (edited or damaged)"))
            continue
        if _line_hash(entry) != got_hash:
            problems.append(AuditProblem(n, f"entry seq {got_seq} was edited (its hash does not match)"))
        if got_seq != seq + 1:
            what = "removed" if got_seq > seq + 1 else "reordered or duplicated"
            problems.append(AuditProblem(n, f"seq {got_seq} follows seq {seq}: entries were {what}"))
        elif got_prev != prev:
            problems.append(AuditProblem(n, f"entry seq {got_seq} does not chain to the previous entry"))
        prev, seq, last_hash = got_hash, got_seq, got_hash
    lag = 0
    if log.head_path.exists():
        try:
            head = json.loads(log.head_path.read_text())
            hseq, hhash = int(head["seq"]), str(head["hash"])
        except (ValueError, KeyError, TypeError):
            problems.append(AuditProblem(0, "the head file is damaged"))
        else:
            if hseq > seq:
                problems.append(AuditProblem(0, f"the head records seq {hseq} but the log ends at seq {seq}: "
                                                "entries were cut off the end"))
            elif hseq == seq and hhash != last_hash:
                problems.append(AuditProblem(0, "the last entry differs from the one the head records"))
            elif hseq == seq - 1:
                lag = 1
            elif hseq < seq - 1:
                problems.append(AuditProblem(0, f"the head records seq {hseq} but the log has {seq}: entries "
                                                "were appended outside trt-edge"))
    elif count:
        problems.append(AuditProblem(0, f"the head file '{log.head_path.name}' is missing"))
    return AuditReport(log.path, count, tuple(problems), lag)
