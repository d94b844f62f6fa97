"""A job waiting in its worker's queue (issue 12): where it stands, and when its queue lease is renewed.

A request with `queue: true` may be answered `accepted, queued` by a worker with no free slot; while the job
waits, the core sends `job_sync` every `keepalive` seconds (whatever it hears), which keeps the worker's
queue lease. Pure data: no IO, time is a parameter.
"""

from __future__ import annotations

import attrs

from fsm_worker.protocol.messages import JobStatus


@attrs.define
class QueueLease:
    """Whether the job waits in the winner's queue, its place there, and the next keep-alive."""

    keepalive: float  # seconds between the `job_sync`s that renew the worker's queue lease
    queued: bool = False
    position: int | None = None
    estimated_start_seconds: float | None = None
    keepalive_at: float | None = None
    left: bool = False  # a numbered event other than "queued" arrived: the job has a slot

    def won(self, position: int | None, estimated_start_seconds: float | None, now: float) -> None:
        """The winning bid was a queue entry: keep its lease alive from now."""
        self.queued, self.keepalive_at = True, now + self.keepalive
        self.position, self.estimated_start_seconds = position, estimated_start_seconds

    def enter(self, status: JobStatus, now: float) -> None:
        """The worker says the job waits in its queue (at `queue_position`): keep its lease alive from now."""
        if not self.queued:
            self.keepalive_at = now + self.keepalive
        self.queued = True
        self.position = status.queue_position
        self.estimated_start_seconds = status.estimated_start_seconds

    def leave(self) -> None:
        """Any other status (starting, running, ...) or the end: the job has left the queue."""
        self.queued, self.keepalive_at, self.left = False, None, True
        self.position = self.estimated_start_seconds = None

    def synced(self, now: float) -> None:
        """A `job_sync` went out: while queued it renews the lease."""
        if self.queued:
            self.keepalive_at = now + self.keepalive

    def due(self, now: float) -> bool:
        return self.keepalive_at is not None and self.keepalive_at <= now

    def end(self) -> None:
        """The job is no longer followed: no more keep-alives."""
        self.keepalive_at = None

    def note(self) -> str:
        """What a failure message adds while the job still waited in the queue."""
        if not self.queued:
            return ""
        place = f" at position {self.position}" if self.position is not None else ""
        return f"; the job was still waiting in its queue{place} and never started: submit it again"
