"""Following a job's numbered events (pure): seq order, each event once, and asking again for what was lost.

An event past a gap is held (up to `MAX_EARLY_EVENTS`); only the missing seqs are asked for, with a bounded
`job_sync` (`after_seq`..`upto_seq`) answered by `job_head`, so nothing the client holds or may still receive
is sent to it again. A worker older than `job_head` ignores `upto_seq`; when no head comes within
`head_timeout` the client asks for a full replay (from `last_seq`, no `upto_seq`) and drops what it holds by
seq, and a worker that never sent a head is asked that way from now on (`legacy_sync`).

Each ask is a `Sync(after_seq, upto_seq)` for `ClientJobCore` to send as `job_sync`.
"""

from __future__ import annotations

import logging

import attrs

from fsm_worker.protocol.messages import JobEvent, JobHead, JobStatus

log = logging.getLogger(__name__)

#: Events held back while an earlier one is missing (beyond this, later ones are asked for again).
MAX_EARLY_EVENTS = 256


@attrs.frozen
class Sync:
    """Ask for the events above `after_seq` (up to `upto_seq`; None: all of them, and no `job_head`)."""

    after_seq: int
    upto_seq: int | None = None


class SeqTracker:
    """What a client has of one job's events, and what it has asked for."""

    def __init__(self, job_id: str, head_timeout: float) -> None:
        self.job_id = job_id  # for the log
        self.head_timeout = head_timeout
        self.last_seq = 0
        self.history: list[JobEvent] = []
        self.early: dict[int, JobEvent] = {}  # events past a gap, held until the gap is filled
        self.asked = 0  # the highest seq a bounded `job_sync` asked for whose `job_head` has not come yet
        self.head_due: float | None = (
            None  # by when the pending bounded `job_sync` should have its `job_head`
        )
        self.heads_seen = False  # this worker has answered a bounded `job_sync` with `job_head`
        self.legacy_sync = False  # it never did within `head_timeout`: full replays instead of bounded ones

    def receive(
        self, event: JobEvent, now: float, *, finished: bool, may_ask: bool
    ) -> tuple[list[JobEvent], list[Sync]]:
        """The events now deliverable in seq order (none after a terminal one, none held once `finished`),
        or the ask for a gap it reveals (only when `may_ask`). A duplicate yields nothing."""
        assert event.seq is not None
        seq = event.seq
        if seq <= self.last_seq or seq in self.early:
            return [], []  # a duplicate
        if seq > self.last_seq + 1:
            seen = self.seen()
            if len(self.early) < MAX_EARLY_EVENTS:
                self.early[seq] = event
            after = max(seen, self.asked)
            if seq - 1 > after and may_ask:  # events reach us in order: these were lost
                log.info("job %s: events %d..%d missing; asking for them", self.job_id, after + 1, seq - 1)
                return [], [self.ask(after, seq - 1, now)]
            return [], []
        ready = [self._take(event)]
        ended = finished or not isinstance(event, JobStatus)
        while not ended and self.last_seq + 1 in self.early:
            ready.append(self._take(self.early.pop(self.last_seq + 1)))
            ended = not isinstance(ready[-1], JobStatus)
        if ended:
            self.early.clear()
        return ready, []

    def _take(self, event: JobEvent) -> JobEvent:
        assert event.seq == self.last_seq + 1
        self.last_seq = event.seq
        self.history.append(event)
        return event

    def seen(self) -> int:
        """The highest seq received (delivered or held)."""
        return max(self.last_seq, max(self.early, default=0))

    def ask(self, after: int, upto: int, now: float) -> Sync:
        """A bounded ask (seqs after..upto), or a full one from a worker without `job_head`."""
        self.asked = max(self.asked, upto)
        if self.legacy_sync:  # a worker without `job_head`: everything after the last delivered event
            return Sync(self.last_seq)
        if self.head_due is None:
            self.head_due = now + self.head_timeout
        return Sync(after, upto)

    def probe(self, now: float) -> Sync:
        """Ask how far the job goes, replaying nothing: an event on its way is never sent twice."""
        last = max(self.seen(), self.asked)  # its `job_head` comes after every earlier request's answer
        return self.ask(last, last, now)

    def replay_all(self, worker: str | None) -> Sync:
        """No `job_head` came in time: ask for every event after the last delivered one (duplicates are
        dropped by seq). A worker that never sent a `job_head` is asked that way from now on."""
        if not self.heads_seen and not self.legacy_sync:
            log.info("job %s: worker %s sends no job_head; asking it for full replays", self.job_id, worker)
            self.legacy_sync = True
        self.head_due, self.asked = None, 0
        return Sync(self.last_seq)

    def on_head(self, head: JobHead, now: float, *, may_ask: bool) -> list[Sync]:
        """The answer to the latest bounded ask: every seq up to `head.last_seq` not received was lost."""
        self.heads_seen = True
        if not may_ask:
            return []
        if (
            head.upto_seq < self.asked
        ):  # a later request is still being answered (requests ask for rising seqs)
            self.head_due = now + self.head_timeout
            return []
        self.asked, self.head_due = 0, None
        missing = [seq for seq in range(self.last_seq + 1, head.last_seq + 1) if seq not in self.early]
        runs: list[tuple[int, int]] = []  # contiguous (after, upto) ranges
        for seq in missing:
            if runs and runs[-1][1] == seq - 1:
                runs[-1] = (runs[-1][0], seq)
            else:
                runs.append((seq - 1, seq))
        return [self.ask(after, upto, now) for after, upto in runs]
