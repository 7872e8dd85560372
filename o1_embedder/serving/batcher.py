"""Batching across requests: one model thread runs the texts of all concurrent requests together.

Each request that needs the model becomes a :class:`Job` (its texts that the thought cache did not answer).
The model thread waits until the oldest waiting text has waited ``window_s`` (or ``max_batch`` texts wait),
then takes up to ``max_batch`` texts, one per job in turn (a request of 2,000 documents does not hold back a
request of one query), and runs each kind of work (thinking queries; documents and queries without a thought)
in one model call. Concurrent clients' queries so share decoding steps.

With continuous batching (the default), thinking queries go into a running decode
(:class:`~o1_embedder.model.thinking.ThinkingStream`) instead: between two decoding steps the model thread takes
what waits (up to ``max_batch`` queries decoding at once; documents are embedded there and then), and each query
is answered at the step its thoughts end. A query that arrives during a long batch so starts at the next step
instead of after the batch.

Results reach the asyncio loop through ``call_soon_threadsafe``: the loop never blocks on the model. A batch
that raises fails only the jobs that had texts in it. Every job ends exactly once: with its vectors, with an
error, or cancelled by its request (timeout, client gone), after which its remaining texts are skipped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from o1_embedder.model.thinking import ThinkingStream
from o1_embedder.serving.runner import THINK, ModelRunner, Prepared

__all__ = ["BatchFailed", "Batcher", "Job", "QueueFull", "ShuttingDown"]

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """More texts wait for the model than the server accepts; the request is refused (retry later)."""


class ShuttingDown(Exception):
    """The server is shutting down and takes no more work, or stopped before this request's turn came."""


class BatchFailed(Exception):
    """The model call for a batch that held some of this request's texts raised (``cause``: what it raised)."""

    def __init__(self, message: str, cause: BaseException | None = None):
        super().__init__(message)
        self.cause = cause


@dataclass(eq=False)
class Job:
    """One request's texts that need the model; ``prepared.vectors`` is filled in as batches finish."""

    prepared: Prepared
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrival: float
    todo: list[int]
    scheduled: int = 0
    remaining: int = field(init=False)
    settled: bool = False

    def __post_init__(self) -> None:
        self.remaining = len(self.todo)

    @property
    def unscheduled(self) -> int:
        return len(self.todo) - self.scheduled


class Batcher:
    """The queue of jobs and the one thread that runs the model on them."""

    def __init__(self, runner: ModelRunner, *, window_s: float, max_batch: int, max_queued: int,
                 continuous: bool = True):
        self._runner = runner
        self._continuous = continuous
        self._streamed: dict[Job, int] = {}    # jobs with texts in the running decode -> how many (model thread)
        self._window_s = window_s
        self._max_batch = max_batch
        self._max_queued = max_queued
        self._cond = threading.Condition()  # guards every field below (an RLock: settling may nest)
        self._jobs: deque[Job] = deque()    # jobs with texts not yet taken into a batch
        self._live: set[Job] = set()        # jobs not settled yet
        self._queued = 0                    # texts not yet taken into a batch
        self._accepting = True
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: why the model thread stopped, when it broke (the server then refuses work and /health says so)
        self.broken: str | None = None
        self.stats = {"batches": 0, "think_batches": 0, "embed_batches": 0, "failed_batches": 0, "texts_run": 0,
                      "largest_batch": 0, "decode_steps": 0, "joined_running_decode": 0}

    # ------------------------------------------------------------------------------ asyncio side
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="o1-embedder-model", daemon=True)
            self._thread.start()

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def in_flight(self) -> int:
        return len(self._live)

    def submit(self, prepared: Prepared) -> Job:
        """Queue the texts of ``prepared`` that have no vector yet; await ``job.future`` for all vectors.

        Raises :class:`ShuttingDown` or :class:`QueueFull` when the work is refused. Must run on the event loop.
        """
        loop = asyncio.get_running_loop()
        todo = prepared.missing
        if not todo:  # nothing for the model: done at once
            job = Job(prepared, loop.create_future(), loop, time.monotonic(), todo, settled=True)
            job.future.set_result(list(prepared.vectors))
            return job
        with self._cond:
            if not self._accepting:
                raise ShuttingDown(self.broken or "the server is shutting down")
            if self._queued + len(todo) > self._max_queued:
                raise QueueFull(f"{self._queued} texts are waiting for the model (limit {self._max_queued}); "
                                f"retry later")
            job = Job(prepared, loop.create_future(), loop, time.monotonic(), todo)
            self._jobs.append(job)
            self._live.add(job)
            self._queued += len(todo)
            self._cond.notify_all()
        job.future.add_done_callback(lambda f: self.cancel(job) if f.cancelled() else None)
        return job

    def cancel(self, job: Job) -> None:
        """The request no longer waits (timeout, client gone): drop its texts that were not run yet."""
        self._settle(job)

    def refuse_new(self) -> None:
        with self._cond:
            self._accepting = False

    def fail_pending(self, error: Exception) -> int:
        """End every job not settled yet with ``error``; returns how many there were."""
        with self._cond:
            jobs = list(self._live)
            for job in jobs:
                self._settle(job, error=error)
        return len(jobs)

    def close(self, timeout: float = 5.0) -> None:
        """Refuse new work, fail what is still queued, and stop the model thread (waiting up to ``timeout``)."""
        self.refuse_new()
        self.fail_pending(ShuttingDown("the server stopped before this request's turn came"))
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # ---------------------------------------------------------------------------- either thread
    def _settle(self, job: Job, vectors: list[np.ndarray] | None = None, error: Exception | None = None) -> None:
        """End ``job`` once: with its vectors, with ``error``, or (neither) cancelled."""
        with self._cond:
            if job.settled:
                return
            job.settled = True
            self._live.discard(job)
            self._queued -= job.unscheduled
            job.scheduled = len(job.todo)
        if vectors is None and error is None:
            return
        try:
            job.loop.call_soon_threadsafe(_resolve, job.future, vectors, error)
        except RuntimeError:  # the event loop is closed: nobody waits any more
            pass

    # ---------------------------------------------------------------------------- model thread
    def _work(self) -> None:
        try:
            stream = self._runner.stream() if self._continuous else None
            while True:
                if self._stopping and not self._live:  # closed: what is left in a running decode has no reader
                    return
                if stream is not None and stream.busy:  # a step boundary: take what waits, without waiting
                    with self._cond:
                        batch = self._take(self._max_batch - stream.in_flight)
                else:
                    collected = self._collect(self._max_batch)
                    if collected is None:
                        return
                    batch = collected
                for kind in {job.prepared.kind: None for job, _ in batch}:
                    items = [(job, i) for job, i in batch if job.prepared.kind == kind]
                    if kind == THINK and stream is not None:
                        stream = self._admit(stream, items)
                    else:
                        self._run(kind, items)
                if stream is not None and stream.busy:
                    stream = self._advance(stream)
        except BaseException as err:  # the model thread itself broke (a batch's own errors are handled in _run)
            logger.error("the model thread stopped", exc_info=err)
            self.broken = f"the model thread stopped: {type(err).__name__}: {err}"
            self.refuse_new()
            self.fail_pending(BatchFailed(self.broken))

    def _collect(self, think_room: int) -> list[tuple[Job, int]] | None:
        """Wait for a batch: up to ``max_batch`` texts once the oldest has waited ``window_s``; ``None``: stop."""
        with self._cond:
            while True:
                self._jobs = deque(job for job in self._jobs if not job.settled and job.unscheduled)
                if not self._jobs:
                    if self._stopping:
                        return None
                    self._cond.wait()
                    continue
                wait = min(job.arrival for job in self._jobs) + self._window_s - time.monotonic()
                if wait <= 0 or self._queued >= self._max_batch or self._stopping:
                    return self._take(think_room)
                self._cond.wait(wait)

    def _take(self, think_room: int) -> list[tuple[Job, int]]:
        """Up to ``max_batch`` texts, at most ``think_room`` of them thinking queries, one per job in turn (round
        robin), so large requests do not starve small. Call with ``_cond`` held."""
        batch: list[tuple[Job, int]] = []
        full: deque[Job] = deque()  # thinking jobs left for the next turn: no room in the decode
        thinking = 0
        while self._jobs and len(batch) < self._max_batch:
            job = self._jobs.popleft()
            if job.settled or not job.unscheduled:
                continue
            if job.prepared.kind == THINK:
                if thinking >= think_room:
                    full.append(job)
                    continue
                thinking += 1
            batch.append((job, job.todo[job.scheduled]))
            job.scheduled += 1
            self._queued -= 1
            if job.unscheduled:
                self._jobs.append(job)
        self._jobs.extendleft(reversed(full))
        return batch

    def _run(self, kind: str, items: list[tuple[Job, int]]) -> None:
        """One model call for ``items``; on error, fail the jobs that had texts in it, and only those."""
        items = [(job, i) for job, i in items if not job.settled]
        if not items:
            return
        texts = [job.prepared.texts[i] for job, i in items]
        payloads = [job.prepared.payloads[i] for job, i in items]
        try:
            vectors = self._runner.think(texts, payloads) if kind == THINK else self._runner.embed(payloads)
            if len(vectors) != len(items):
                raise RuntimeError(f"the model returned {len(vectors)} vectors for {len(items)} texts")
        except Exception as err:  # noqa: BLE001 - any failure of the model call is this batch's failure alone
            if getattr(err, "status", None) in (502, 504):  # the generation server's fault, said in the answer
                logger.warning("%s batch of %d texts failed: %s", kind, len(items), err)
            else:
                logger.exception("model call failed for a %s batch of %d texts", kind, len(items))
            self._fail(dict.fromkeys(job for job, _ in items), err)
            return
        self.stats["batches"] += 1
        self.stats[f"{kind}_batches"] += 1
        self.stats["texts_run"] += len(items)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(items))
        for (job, i), vector in zip(items, vectors):
            job.prepared.vectors[i] = vector
            job.remaining -= 1
            if job.remaining == 0:
                self._settle(job, vectors=list(job.prepared.vectors))


    def _admit(self, stream: ThinkingStream, items: list[tuple[Job, int]]) -> ThinkingStream:
        """Start ``items`` (thinking queries) in the running decode; if that fails, fail their jobs."""
        items = [(job, i) for job, i in items if not job.settled]
        if not items:
            return stream
        texts, prompts, labels = _unique(items)
        if stream.in_flight:
            self.stats["joined_running_decode"] += len(items)
        try:
            stream.add(texts, prompts, labels)
        except Exception as err:  # noqa: BLE001 - a failed start is the failure of these texts alone
            logger.exception("starting %d thinking queries failed", len(items))
            self._fail(dict.fromkeys(job for job, _ in items), err)
            return stream  # a failed start leaves the running decode as it was
        for job, _ in items:
            self._streamed[job] = self._streamed.get(job, 0) + 1
        self.stats["batches"] += 1
        self.stats["think_batches"] += 1
        self.stats["texts_run"] += len(items)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], stream.in_flight)
        return stream

    def _advance(self, stream: ThinkingStream) -> ThinkingStream:
        """One decoding step; answer the queries it finished. A failing step fails every job in the decode and
        starts a new one."""
        try:
            finished = stream.step()
        except Exception as err:  # noqa: BLE001 - the decode's failure is that of the jobs in it alone
            logger.exception("a decoding step failed with %d jobs in it", len(self._streamed))
            self._fail(list(self._streamed), err)
            self._streamed.clear()
            return self._runner.stream() or stream
        self.stats["decode_steps"] += 1
        for label, vector in finished:
            self._deliver(cast("list[tuple[Job, int]]", label), vector.float().cpu().numpy())
        return stream

    def _deliver(self, items: list[tuple[Job, int]], vector: np.ndarray) -> None:
        """A finished query's vector to every (job, text) that asked for it."""
        for job, i in items:
            left = self._streamed.get(job, 0) - 1
            if left > 0:
                self._streamed[job] = left
            else:
                self._streamed.pop(job, None)
            if job.settled:
                continue
            job.prepared.vectors[i] = vector
            job.remaining -= 1
            if job.remaining == 0:
                self._settle(job, vectors=list(job.prepared.vectors))

    def _fail(self, jobs: Iterable[Job], err: Exception) -> None:
        """End ``jobs`` with the failure of the model call they had texts in."""
        self.stats["failed_batches"] += 1
        for job in jobs:
            self._settle(job, error=BatchFailed(f"{type(err).__name__} in the model call for this batch", err))


def _unique(items: list[tuple[Job, int]]) -> tuple[list[str], list[list[int]], list[list[tuple[Job, int]]]]:
    """The distinct texts of ``items``, their payloads, and the items of each (a repeated text is computed once)."""
    groups: dict[str, list[tuple[Job, int]]] = {}
    for job, i in items:
        groups.setdefault(job.prepared.texts[i], []).append((job, i))
    first = [group[0] for group in groups.values()]
    return list(groups), [job.prepared.payloads[i] for job, i in first], list(groups.values())


def _resolve(future: asyncio.Future, vectors: list[np.ndarray] | None, error: Exception | None) -> None:
    """On the event loop: hand the outcome to the waiting request, unless it stopped waiting."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(vectors)
