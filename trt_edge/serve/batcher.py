"""Schedulers: how requests for one model version reach its execution instances.

:class:`DynamicBatcher` follows Triton's dynamic batcher: requests queue in arrival order; when an
instance is free it forms a batch from the head of the queue, as large as possible up to
``max_batch_size``. It sends at once when the batch reaches the largest ``preferred_batch_size`` (or
``max_batch_size``), and otherwise holds the oldest request at most
``max_queue_delay_microseconds`` before sending what it has. Only requests whose non-batch shapes
agree are batched together (the batch stops at the first one that differs, so order is kept).
Inputs are concatenated along the batch axis and outputs split back by each request's batch size.
``default_queue_policy``: a full queue (``max_queue_size``) rejects at once and a request that
waited past ``default_timeout_microseconds`` is rejected when reached; both answer 503 as Triton does.

:class:`DirectScheduler` runs each request on its own (no dynamic batching configured).
Both run up to N executions at once (N = the model's instance count) and record statistics.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from typing import Any, Callable

import numpy as np

from ..errors import TrtEdgeError
from .backend import LoadedModel
from .config import DynamicBatching

log = logging.getLogger(__name__)


class SchedulerError(TrtEdgeError):
    """Refused by the scheduler; ``status`` is the HTTP status (503: queue full / timeout / closing)."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Counter:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, n: int = 1) -> None:
        self.count += n
        self.ns += ns


@dataclasses.dataclass
class VersionStats:
    """Triton's per-model statistics (``/v2/models/{m}/stats``)."""

    success: Counter = dataclasses.field(default_factory=Counter)
    fail: Counter = dataclasses.field(default_factory=Counter)
    queue: Counter = dataclasses.field(default_factory=Counter)
    compute_input: Counter = dataclasses.field(default_factory=Counter)
    compute_infer: Counter = dataclasses.field(default_factory=Counter)
    compute_output: Counter = dataclasses.field(default_factory=Counter)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, Counter] = dataclasses.field(default_factory=dict)

    def as_json(self, name: str, version: str) -> dict[str, Any]:
        def c(x: Counter) -> dict[str, int]:
            return {"count": x.count, "ns": x.ns}
        return {"name": name, "version": version, "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count, "execution_count": self.execution_count,
                "inference_stats": {"success": c(self.success), "fail": c(self.fail), "queue": c(self.queue),
                                    "compute_input": c(self.compute_input),
                                    "compute_infer": c(self.compute_infer),
                                    "compute_output": c(self.compute_output)},
                "batch_stats": [{"batch_size": b, "compute_infer": c(x)}
                                for b, x in sorted(self.batches.items())]}


# Observer of one execution: (batch_size, number of requests, queue ns per request list, compute ns).
ExecutionHook = Callable[[int, int, list[int], int], None]


@dataclasses.dataclass(eq=False)
class _Pending:
    feed: dict[str, np.ndarray]
    batch: int
    key: tuple                      # non-batch shapes: requests batch together only when equal
    future: asyncio.Future
    enqueued_ns: int
    deadline_ns: int | None


class _Scheduler:
    def __init__(self, model: LoadedModel, stats: VersionStats, on_execution: ExecutionHook | None) -> None:
        self.model = model
        self.stats = stats
        self._on_execution = on_execution
        self._slots = asyncio.Semaphore(max(1, model.instances))
        self._closing = False
        self._running: set[asyncio.Task] = set()

    @property
    def pending(self) -> int:
        return 0

    def _record(self, batch: int, queue_ns: list[int], compute_ns: int, t_in: int, t_out: int) -> None:
        s = self.stats
        s.execution_count += 1
        s.inference_count += batch
        s.compute_infer.add(compute_ns, len(queue_ns))
        s.compute_input.add(t_in, len(queue_ns))
        s.compute_output.add(t_out, len(queue_ns))
        for q in queue_ns:
            s.queue.add(q)
        s.batches.setdefault(batch, Counter()).add(compute_ns)
        s.last_inference_ms = int(time.time() * 1000)
        if self._on_execution is not None:
            self._on_execution(batch, len(queue_ns), queue_ns, compute_ns)

    async def submit(self, feed: dict[str, np.ndarray], batch: int, timeout_us: int | None = None
                     ) -> dict[str, np.ndarray]:
        raise NotImplementedError

    async def close(self) -> None:
        """Refuse new requests, then wait for queued and running ones."""
        self._closing = True
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)


class DirectScheduler(_Scheduler):
    """One execution per request (no dynamic batching)."""

    def __init__(self, model: LoadedModel, stats: VersionStats, on_execution: ExecutionHook | None = None,
                 ) -> None:
        super().__init__(model, stats, on_execution)
        self._waiting = 0

    @property
    def pending(self) -> int:
        return self._waiting

    async def submit(self, feed: dict[str, np.ndarray], batch: int, timeout_us: int | None = None
                     ) -> dict[str, np.ndarray]:
        if self._closing:
            raise SchedulerError("the model is being unloaded; retry once it is loaded again", 503)
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        t0 = time.perf_counter_ns()
        self._waiting += 1
        waiting = True
        try:
            async with self._slots:
                t1 = time.perf_counter_ns()
                self._waiting -= 1
                waiting = False
                res = await self.model.infer_aio(feed)
            queue_ns = (t1 - t0) + int(res.queue_s * 1e9)
            self._record(batch, [queue_ns], int(res.compute_s * 1e9), 0, 0)
            return res.outputs
        finally:
            if waiting:
                self._waiting -= 1
            if task is not None:
                self._running.discard(task)


class DynamicBatcher(_Scheduler):
    def __init__(self, model: LoadedModel, stats: VersionStats, policy: DynamicBatching, max_batch_size: int,
                 on_execution: ExecutionHook | None = None) -> None:
        super().__init__(model, stats, on_execution)
        self.policy = policy
        self.max_batch_size = max(1, int(max_batch_size))
        preferred = sorted(p for p in policy.preferred_batch_size if p <= self.max_batch_size)
        self._send_at = preferred[-1] if preferred else self.max_batch_size
        self._delay_ns = int(policy.max_queue_delay_microseconds) * 1000
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_samples = 0
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task | None = None

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="dynamic-batcher")

    async def submit(self, feed: dict[str, np.ndarray], batch: int, timeout_us: int | None = None
                     ) -> dict[str, np.ndarray]:
        if self._closing:
            raise SchedulerError("the model is being unloaded; retry once it is loaded again", 503)
        q = self.policy.default_queue_policy
        if q.max_queue_size and len(self._queue) >= q.max_queue_size:
            raise SchedulerError("Exceeds maximum queue size", 503)
        if batch > self.max_batch_size:
            raise SchedulerError(f"inference request batch-size must be <= {self.max_batch_size}", 400)
        timeout = q.default_timeout_microseconds
        if timeout_us is not None and q.allow_timeout_override:
            timeout = timeout_us
        now = time.perf_counter_ns()
        key = tuple((n, a.shape[1:], a.dtype.str) for n, a in sorted(feed.items()))
        fut = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(feed, batch, key, fut, now, now + timeout * 1000 if timeout else None))
        self._queued_samples += batch
        # Wake the batcher only when this arrival can change its decision: the first request (it may
        # be idle), a batch that is now full enough, or no delay to hold requests for; otherwise its
        # timer for the oldest request's delay fires on its own.
        if len(self._queue) == 1 or self._queued_samples >= self._send_at or self._delay_ns == 0 \
                or key != self._queue[0].key:
            self._wakeup.set()
        self._ensure_loop()
        return await fut

    def _drop_head_expired(self, now: int) -> None:
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # the caller went away (cancelled)
                self._queue.popleft()
                self._queued_samples -= head.batch
                continue
            if head.deadline_ns is not None and now >= head.deadline_ns:
                self._queue.popleft()
                self._queued_samples -= head.batch
                head.future.set_exception(SchedulerError("Request timeout expired", 503))
                continue
            break

    def _take(self, limit: int) -> list[_Pending]:
        taken, total = [], 0
        key = self._queue[0].key
        while self._queue:
            p = self._queue[0]
            if p.future.done():
                self._queue.popleft()
                self._queued_samples -= p.batch
                continue
            if p.key != key or total + p.batch > limit:
                break
            taken.append(self._queue.popleft())
            self._queued_samples -= p.batch
            total += p.batch
        return taken

    def _head_run(self) -> int:
        """Samples at the head of the queue that can go in one batch (same shapes, <= max)."""
        total, key = 0, self._queue[0].key
        for p in self._queue:
            if p.key != key or total + p.batch > self.max_batch_size:
                break
            total += p.batch
        return total

    async def _run(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                batch = await self._form_batch()
            except BaseException:
                self._slots.release()
                raise
            if not batch:  # closing and drained
                self._slots.release()
                return
            task = asyncio.get_running_loop().create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _form_batch(self) -> list[_Pending]:
        while True:
            now = time.perf_counter_ns()
            self._drop_head_expired(now)
            if not self._queue:
                if self._closing:
                    return []
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            ready = self._head_run()
            oldest = self._queue[0].enqueued_ns
            blocked = ready < self._queued_samples and ready < self.max_batch_size  # shape change at head
            if (ready >= self._send_at or self._delay_ns == 0 or now - oldest >= self._delay_ns
                    or blocked or self._closing):
                limit = self._send_at if ready >= self._send_at else self.max_batch_size
                return self._take(limit)
            self._wakeup.clear()
            wait_s = (oldest + self._delay_ns - now) / 1e9
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait_s)
            except asyncio.TimeoutError:
                pass

    async def _execute(self, batch: list[_Pending]) -> None:
        try:
            start = time.perf_counter_ns()
            t0 = time.perf_counter_ns()
            if len(batch) == 1:
                feed = batch[0].feed
            else:
                feed = {n: np.concatenate([p.feed[n] for p in batch], axis=0) for n in batch[0].feed}
            t_in = time.perf_counter_ns() - t0
            size = sum(p.batch for p in batch)
            try:
                res = await self.model.infer_aio(feed)
            except Exception as exc:  # noqa: BLE001 - every caller gets the failure
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                return
            t0 = time.perf_counter_ns()
            queue_ns = [start - p.enqueued_ns + int(res.queue_s * 1e9) for p in batch]
            offset = 0
            for p in batch:
                part = {n: (v[offset:offset + p.batch] if len(batch) > 1 else v)
                        for n, v in res.outputs.items()}
                offset += p.batch
                if not p.future.done():
                    p.future.set_result(part)
            self._record(size, queue_ns, int(res.compute_s * 1e9), t_in, time.perf_counter_ns() - t0)
        finally:
            self._slots.release()
            if self._queue:
                self._wakeup.set()

    async def close(self) -> None:
        self._closing = True
        self._wakeup.set()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await super().close()


def make_scheduler(model: LoadedModel, stats: VersionStats, *, max_batch_size: int,
                   dynamic_batching: DynamicBatching | None, on_execution: ExecutionHook | None = None
                   ) -> _Scheduler:
    if dynamic_batching is not None and max_batch_size > 0:
        return DynamicBatcher(model, stats, dynamic_batching, max_batch_size, on_execution)
    return DirectScheduler(model, stats, on_execution)

