"""Placement of jobs on slots with a FIFO queue behind them (issue 12): pure, deterministic, no clock, no IO.

The worker's table keeps deciding each job's protocol steps; this value only answers "where does this job
run, and when": place now (k slots together), queue (with position and estimated start), or refuse with the
reason issue 12 names (`busy`, `incompatible`, `queue_full`, `client_cap`). When slots free, the queue's head
starts if it fits; nothing behind it may overtake it (plain FIFO, so the head cannot starve).

The coordinator (`coordinator.py`, `placement.py`) holds one of these: its table's guards ask it whether a
slot is free or the queue refuses, its actions place, enqueue and release jobs through it.
"""

from __future__ import annotations

import attrs

from fsm_worker.protocol.worker.job_queue import JobQueue, QueueEntry, QueueRefusal, estimated_start_seconds
from fsm_worker.protocol.worker.slots import SlotState, SlotTable


@attrs.frozen
class Decision:
    """The answer to one request: `placed`, `queued` (with position and estimate) or refused (`reason`)."""

    job_id: str
    placed: bool = False
    queued: bool = False
    queue_position: int | None = None
    estimated_start_seconds: float | None = None
    reason: str | None = None
    detail: str | None = None


@attrs.frozen
class Held:
    """A job in slots: its client and estimated end (start + its estimated duration)."""

    job_id: str
    client_id: str
    ends_at: float


@attrs.frozen
class Scheduler:
    slots: SlotTable
    queue: JobQueue
    held: tuple[Held, ...] = ()

    def _held_by(self, client_id: str) -> int:
        return sum(h.client_id == client_id for h in self.held)

    def _estimate(self, gpus: int, ahead: tuple[QueueEntry, ...], now: float) -> float:
        ends = tuple(h.ends_at for h in self.held for _ in self.slots.slots_of(h.job_id))
        return estimated_start_seconds(
            ends, self.slots.free, tuple((e.gpus, e.estimated_minutes * 60.0) for e in ahead), gpus, now
        )

    def request(
        self,
        job_id: str,
        client_id: str,
        gpus: int,
        *,
        may_queue: bool,
        estimated_minutes: float,
        now: float,
        min_memory_mb: int = 0,
    ) -> tuple[Scheduler, Decision]:
        """Place, queue or refuse one request; a refusal returns this scheduler unchanged."""
        if not self.slots.could_ever_fit(gpus, min_memory_mb):
            return self, Decision(
                job_id, reason="incompatible", detail=f"needs {gpus} slots, the worker has {self.slots.total}"
            )
        if self.slots.slots_of(job_id) or self.queue.position(job_id) is not None:
            return self, Decision(job_id, reason="busy", detail=f"job {job_id} is already held")
        queued_by_client = sum(e.client_id == client_id for e in self.queue.entries)
        if self._held_by(client_id) + queued_by_client >= self.queue.max_per_client:
            return self, Decision(job_id, reason="client_cap", detail="max_jobs_per_client")
        placed = (
            None if self.queue.entries else self.slots.place(job_id, gpus, SlotState.RESERVED, min_memory_mb)
        )
        if placed is not None:
            held = Held(job_id, client_id, now + estimated_minutes * 60.0)
            return attrs.evolve(self, slots=placed, held=(*self.held, held)), Decision(job_id, placed=True)
        if not may_queue:
            return self, Decision(
                job_id, reason="busy", detail="no free slot and the request did not ask to queue"
            )
        refusal = self.queue.refusal(client_id, self._held_by(client_id))
        if refusal is not None:
            reason = "busy" if refusal is QueueRefusal.DISABLED else refusal.value
            return self, Decision(job_id, reason=reason, detail=refusal.setting)
        estimate = self._estimate(gpus, self.queue.entries, now)
        queue = self.queue.push(QueueEntry(job_id, client_id, gpus, estimated_minutes, now))
        decision = Decision(
            job_id, queued=True, queue_position=queue.length, estimated_start_seconds=estimate
        )
        return attrs.evolve(self, queue=queue), decision

    def place(
        self, job_id: str, client_id: str, gpus: int, minutes: float, now: float, min_memory_mb: int = 0
    ) -> Scheduler | None:
        """The job reserves `gpus` free slots now, or None when they are not free (or the queue is not empty:
        nothing overtakes a queued job)."""
        placed = (
            None if self.queue.entries else self.slots.place(job_id, gpus, SlotState.RESERVED, min_memory_mb)
        )
        if placed is None:
            return None
        return attrs.evolve(
            self, slots=placed, held=(*self.held, Held(job_id, client_id, now + minutes * 60.0))
        )

    def enqueue(
        self, job_id: str, client_id: str, gpus: int, minutes: float, now: float, min_memory_mb: int = 0
    ) -> Scheduler:
        """The job joins the queue's tail (the caller asked `queue.refusal` first)."""
        entry = QueueEntry(job_id, client_id, gpus, minutes, now, min_memory_mb)
        return attrs.evolve(self, queue=self.queue.push(entry))

    def keep_alive(self, job_id: str, now: float) -> Scheduler:
        return attrs.evolve(self, queue=self.queue.keep_alive(job_id, now))

    def start(self, job_id: str) -> Scheduler:
        """The placed job was assigned: its slots become busy."""
        return attrs.evolve(self, slots=self.slots.mark(job_id, SlotState.BUSY))

    def release(self, job_id: str, now: float, grant: bool = True) -> tuple[Scheduler, tuple[str, ...]]:
        """The job ended (or its reservation lapsed, or it was cancelled while queued); queue heads that now fit
        take slots (unless not `grant`: draining), in order, until the head does not fit. Returns the job ids
        that got slots."""
        scheduler = attrs.evolve(
            self,
            slots=self.slots.release(job_id),
            queue=self.queue.remove(job_id),
            held=tuple(h for h in self.held if h.job_id != job_id),
        )
        started: list[str] = []
        while grant and (head := scheduler.queue.head()) is not None:
            placed = scheduler.slots.place(head.job_id, head.gpus, SlotState.BUSY, head.min_memory_mb)
            if placed is None:
                break
            held = Held(head.job_id, head.client_id, now + head.estimated_minutes * 60.0)
            scheduler = attrs.evolve(
                scheduler,
                slots=placed,
                queue=scheduler.queue.remove(head.job_id),
                held=(*scheduler.held, held),
            )
            started.append(head.job_id)
        return scheduler, tuple(started)

    def expire(self, now: float, lease: float) -> tuple[Scheduler, tuple[str, ...]]:
        """Queued jobs not kept alive for `lease` seconds leave the queue (`QUEUE_LEASE_EXPIRED`)."""
        expired = self.queue.expired(now, lease)
        queue = self.queue
        for job_id in expired:
            queue = queue.remove(job_id)
        return attrs.evolve(self, queue=queue), expired

    def positions(self, now: float) -> tuple[tuple[str, int, float], ...]:
        """(job id, 1-based position, estimated start) of every queued job: the `job_status queued` contents."""
        entries = self.queue.entries
        return tuple(
            (e.job_id, place, self._estimate(e.gpus, entries[: place - 1], now))
            for place, e in enumerate(entries, start=1)
        )
