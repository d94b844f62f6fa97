"""Placement of jobs on slots with a FIFO queue behind them (issue 12): pure, deterministic, no clock, no IO.

The worker's table keeps deciding each job's protocol steps; this value only answers "where does this job
run, and when": place now (k slots together), queue (with position and estimated start), or refuse with the
reason issue 12 names (`busy`, `incompatible`, `queue_full`, `client_cap`). When slots free, queued jobs start
in queue order as they fit. A job that fits now may pass earlier queued jobs that do not fit yet (a new
request, or a later queued job), but only while each of those has been passed fewer than the queue's
`bypass_limit` times (`job_queue.py`); past that, the free slots are *held* for the queue: they are not
advertised as free and the worker's status is not `available` on their account.

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
        placed = self.place(job_id, client_id, gpus, estimated_minutes, now, min_memory_mb)
        if placed is not None:
            return placed, Decision(job_id, placed=True)
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
        """The job reserves `gpus` free slots now, or None when they are not free or held for the queue (it
        passes every queued job: each counts one more bypass)."""
        placed = self.slots.place(job_id, gpus, SlotState.RESERVED, min_memory_mb)
        if placed is None or not self.queue.may_pass():
            return None
        held = (*self.held, Held(job_id, client_id, now + minutes * 60.0))
        queue = self.queue.passed() if self.queue.entries else self.queue
        return attrs.evolve(self, slots=placed, queue=queue, held=held)

    def may_place(self, gpus: int, min_memory_mb: int = 0) -> bool:
        """Whether a new request for `gpus` slots would be placed now (`place`)."""
        return self.slots.fits_now(gpus, min_memory_mb) and self.queue.may_pass()

    @property
    def holds_free_slots(self) -> bool:
        """The free slots are held for a queued job that may not be passed any more: nothing else takes them."""
        return bool(self.queue.entries) and not self.queue.may_pass() and bool(self.slots.free)

    def slot_states(self) -> tuple[str, ...]:
        """`metadata.slots[].state` per slot: `available`, `held` (free, but kept for the queue), `reserved`,
        `busy`."""
        free = "held" if self.holds_free_slots else SlotState.AVAILABLE.value
        return tuple(free if h is None else h.state.value for h in self.slots.holders)

    def status(self) -> str:
        """The advertised status: `available` while a slot is free for a new job (not held for the queue),
        else `busy` if any slot runs a job, else `reserved`."""
        if not self.queue.entries or self.queue.may_pass():
            return self.slots.status()  # nothing held for the queue: the slots' own status
        busy = any(h is not None and h.state is SlotState.BUSY for h in self.slots.holders)
        return "busy" if busy else "reserved"

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
        """The job ended (or its reservation lapsed, or it was cancelled while queued); queued jobs that now fit
        take slots (unless not `grant`: draining), in queue order, each passing the earlier ones that do not
        fit only while they may be passed (`JobQueue.may_pass`). Returns the job ids that got slots, in order."""
        scheduler = attrs.evolve(
            self,
            slots=self.slots.release(job_id),
            queue=self.queue.remove(job_id),
            held=tuple(h for h in self.held if h.job_id != job_id),
        )
        started: list[str] = []
        while grant and (next_one := scheduler.start_next(now)) is not None:
            scheduler = next_one
            started.append(scheduler.held[-1].job_id)
        return scheduler, tuple(started)

    def start_next(self, now: float) -> Scheduler | None:
        """The first queued job that fits now and may pass the ones before it, started; None when there is none."""
        for index, entry in enumerate(self.queue.entries):
            if not self.queue.may_pass(index):
                return None  # an earlier job may not be passed any more: the free slots are held for it
            placed = self.slots.place(entry.job_id, entry.gpus, SlotState.BUSY, entry.min_memory_mb)
            if placed is not None:
                held = Held(entry.job_id, entry.client_id, now + entry.estimated_minutes * 60.0)
                queue = self.queue.passed(index).remove(entry.job_id)
                return attrs.evolve(self, slots=placed, queue=queue, held=(*self.held, held))
        return None

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
