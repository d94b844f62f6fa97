"""The worker's bounded queue of jobs waiting for slots (issue 12): a pure value, no IO, no clock.

FIFO with bounded bypass (backfill without runtime estimates): a job that fits now may start before earlier
queued jobs that do not fit yet, but each queued job can be passed at most `bypass_limit` times; once one has
been passed that often, nobody passes it any more and the free slots are held for it, so it cannot starve.
`bypass_limit` 0 is strict FIFO. Entries are kept alive by their client (`job_sync`); `expired(now)` lists
those past `queue_lease`.
"""

from __future__ import annotations

import enum

import attrs


class QueueRefusal(enum.Enum):
    """Why a request was not queued: the `job_response` `reason`, and the setting it names."""

    DISABLED = "busy"  # queue_size = 0, or the request did not ask to queue
    FULL = "queue_full"
    CLIENT_CAP = "client_cap"

    @property
    def setting(self) -> str:
        return {"busy": "queue_size", "queue_full": "queue_size", "client_cap": "max_jobs_per_client"}[
            self.value
        ]


@attrs.frozen
class QueueEntry:
    """A queued job: who asked, how many slots it needs, and when its client last kept it alive."""

    job_id: str
    client_id: str
    gpus: int
    estimated_minutes: float
    alive_at: float
    min_memory_mb: int = 0  # per GPU slot, as the request asks
    #: How often a later job took slots while this one waited (at most the queue's `bypass_limit`).
    bypassed: int = 0


@attrs.frozen
class JobQueue:
    """The queue: an immutable value; every change returns a new queue."""

    capacity: int
    max_per_client: int
    bypass_limit: int = 0
    entries: tuple[QueueEntry, ...] = ()

    @property
    def length(self) -> int:
        return len(self.entries)

    @property
    def free(self) -> int:
        return max(self.capacity - self.length, 0)

    def refusal(self, client_id: str, held_by_client: int) -> QueueRefusal | None:
        """Why `client_id`'s request cannot be queued now (`held_by_client`: its reserved + running jobs here)."""
        if self.capacity == 0:
            return QueueRefusal.DISABLED
        if self.length >= self.capacity:
            return QueueRefusal.FULL
        queued = sum(entry.client_id == client_id for entry in self.entries)
        if held_by_client + queued >= self.max_per_client:
            return QueueRefusal.CLIENT_CAP
        return None

    def push(self, entry: QueueEntry) -> JobQueue:
        """The entry joins the tail (the caller checked `refusal` first)."""
        if any(e.job_id == entry.job_id for e in self.entries):
            raise ValueError(f"job_id: {entry.job_id} is already queued")
        return attrs.evolve(self, entries=(*self.entries, entry))

    def remove(self, job_id: str) -> JobQueue:
        """Without `job_id` (cancelled, expired, or started); no-op when it is not queued."""
        return attrs.evolve(self, entries=tuple(e for e in self.entries if e.job_id != job_id))

    def keep_alive(self, job_id: str, now: float) -> JobQueue:
        return attrs.evolve(
            self,
            entries=tuple(attrs.evolve(e, alive_at=now) if e.job_id == job_id else e for e in self.entries),
        )

    def may_pass(self, before: int | None = None) -> bool:
        """Whether a job may take slots ahead of the first `before` entries (None: all of them, a new request):
        each of them may still be passed (`bypass_limit`)."""
        return all(e.bypassed < self.bypass_limit for e in self.entries[:before])

    def passed(self, before: int | None = None) -> JobQueue:
        """The first `before` entries (None: all) were passed once more by a job that took slots."""
        count = len(self.entries) if before is None else before
        entries = tuple(
            attrs.evolve(e, bypassed=e.bypassed + 1) if i < count else e for i, e in enumerate(self.entries)
        )
        return attrs.evolve(self, entries=entries)

    def head(self) -> QueueEntry | None:
        return self.entries[0] if self.entries else None

    def position(self, job_id: str) -> int | None:
        """1-based place of `job_id`, or None when it is not queued."""
        for place, entry in enumerate(self.entries, start=1):
            if entry.job_id == job_id:
                return place
        return None

    def expired(self, now: float, lease: float) -> tuple[str, ...]:
        """Job ids whose client has not kept them alive for `lease` seconds, in queue order."""
        return tuple(e.job_id for e in self.entries if now - e.alive_at >= lease)

    def next_deadline(self, lease: float) -> float | None:
        """When the first entry's lease runs out (a deadline as data for the core)."""
        return min((e.alive_at + lease for e in self.entries), default=None)


def estimated_start_seconds(
    running_ends: tuple[float, ...],
    free_slots: int,
    ahead: tuple[tuple[int, float], ...],
    gpus: int,
    now: float,
) -> float:
    """Seconds until a job needing `gpus` slots would start, under plain FIFO (bypassing jobs are not foreseen:
    with a `bypass_limit` the estimate may be short by up to that many passing jobs' run times).

    `running_ends`: the estimated end time of each busy or reserved slot (start + `estimate_duration_minutes`;
    a job past its estimate counts as ending now); `ahead`: (slots, estimated seconds) of each queued job in
    front. Each job ahead starts when enough slots have ended, on the earliest-ending ones, and frees them
    after its own estimate. A job that could never fit is estimated at 0 (it is refused `incompatible`).
    """
    ends = sorted([now] * free_slots + [max(end, now) for end in running_ends])
    if gpus > len(ends):
        return 0.0
    for need, seconds in ahead:
        if 1 <= need <= len(ends):
            start = ends[need - 1]
            ends = sorted(ends[need:] + [start + seconds] * need)
    return max(ends[gpus - 1] - now, 0.0)
