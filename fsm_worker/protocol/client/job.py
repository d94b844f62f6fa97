"""The client's side of the job protocol as a pure core: bidding, assignment, seq tracking, liveness, outcome.

`ClientJobCore.handle(event, now)` applies one event and returns the instructions for the shell; it never
does IO, never sleeps and never raises out of `handle`. `next_deadline()` says when `TimerFired` has work.

Queueing (issue 12): a request with `queue: true` may be answered `accepted, queued` by a worker with no free
slot. An offer that places the job now always beats a queued one; among queued offers the earliest estimated
start wins (then the lower position, then the first to answer), and every other offer is released with
`job_cancel` at once, so a job holds at most one queue entry in the room. While the job waits, the core
sends `job_sync` every `queue_keepalive` seconds (whatever it hears), which keeps the worker's queue lease.

Following a job: probes and gaps send a bounded `job_sync` (`upto_seq`), answered by `job_head`. A worker
older than `job_head` ignores `upto_seq` and replays everything above `after_seq` without a head; when no
`job_head` comes within `head_timeout`, the core asks for a full replay (`job_sync` from `last_seq`, no
`upto_seq`) and drops what it already holds by `seq`; if that worker never sent a `job_head`, every later
probe and gap is asked for the same way (`legacy_sync`).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence

import attrs

from fsm_worker.protocol.client.errors import AllRejectedError, JobFailedError, WorkerGoneError
from fsm_worker.protocol.client.events import (
    Abandoned,
    Attached,
    BiddingOpened,
    CancelRequested,
    ChannelLost,
    ClientJobState,
    ClientTimeouts,
    ControlReply,
    Deliver,
    Event,
    Fail,
    Instruction,
    MessageReceived,
    OfferReady,
    Outcome,
    QueueUpdate,
    Reconnected,
    Refused,
    Send,
    SendReported,
    StopRequested,
    TimerFired,
    WorkerChosen,
)
from fsm_worker.protocol.messages import (
    AppError,
    JobAssignment,
    JobCancel,
    JobCancelled,
    JobComplete,
    JobEvent,
    JobFailed,
    JobHead,
    JobRequest,
    JobResponse,
    JobStatus,
    JobStop,
    JobSync,
    Metrics,
    RtcOffer,
)

log = logging.getLogger(__name__)

#: Events held back while an earlier one is missing (beyond this, later ones are asked for again).
MAX_EARLY_EVENTS = 256

NEW, BIDDING, ASSIGNED = ClientJobState.NEW, ClientJobState.BIDDING, ClientJobState.ASSIGNED
FINISHED, FAILED, ABANDONED = ClientJobState.FINISHED, ClientJobState.FAILED, ClientJobState.ABANDONED

#: The one table: every state change the core may make. Anything else is refused without change.
TRANSITIONS: dict[ClientJobState, frozenset[ClientJobState]] = {
    NEW: frozenset({BIDDING, ASSIGNED, ABANDONED}),
    BIDDING: frozenset({ASSIGNED, FAILED, ABANDONED}),
    ASSIGNED: frozenset({FINISHED, FAILED, ABANDONED}),
    FINISHED: frozenset(),
    FAILED: frozenset(),
    ABANDONED: frozenset(),
}


def job_key_sha256(job_key: str) -> str:
    """The hash a `job_request` carries instead of the key: 64 lowercase hex digits."""
    return hashlib.sha256(job_key.encode()).hexdigest()


class ClientJobCore:
    """One job as its client plays the protocol."""

    def __init__(
        self, request: JobRequest, job_key: str | None, timeouts: ClientTimeouts | None = None
    ) -> None:
        """`job_key` is the job's secret (None: a job attached without one; its messages carry no key)."""
        digest = job_key_sha256(job_key) if job_key is not None else None
        self.request = attrs.evolve(request, job_key_sha256=digest)
        self.job_key = job_key
        self.timeouts = timeouts or ClientTimeouts()
        self.state = NEW
        self.worker: str | None = None
        self.last_seq = 0
        self.history: list[JobEvent] = []
        self.terminal: JobEvent | None = None
        self.metrics: Metrics | None = None
        self.error: Exception | None = None
        # bidding
        self._candidates: tuple[str, ...] = ()
        self._pending: set[str] = set()
        self._accepted: dict[str, float] = {}
        self._queue_offers: dict[str, tuple[float, int]] = {}  # worker → (estimated start, position)
        self._rejected: dict[str, tuple[str, Sequence[str]]] = {}
        self._bid_window = 0.0
        self._response_deadline: float | None = None
        self._window_ends: float | None = None
        self._released: set[str] = set()
        # following
        self._probe_at: float | None = None
        self._unreachable_since: float | None = None
        # waiting in the winner's queue (no slot yet)
        self.queued = False
        self.queue_position: int | None = None
        self.estimated_start_seconds: float | None = None
        self._keepalive_at: float | None = None
        self._left_queue = False  # a numbered event other than "queued" arrived: the job has a slot
        self._early: dict[int, JobEvent] = {}  # events past a gap, held until the gap is filled
        self._asked = 0  # the highest seq a bounded `job_sync` asked for whose `job_head` has not come yet
        self._head_due: float | None = (
            None  # by when the pending bounded `job_sync` should have its `job_head`
        )
        self._heads_seen = False  # this worker has answered a bounded `job_sync` with `job_head`
        self.legacy_sync = False  # it never did within `head_timeout`: full replays instead of bounded ones
        self._out: list[Instruction] = []

    @property
    def job_id(self) -> str:
        return self.request.job_id

    @property
    def finished(self) -> bool:
        return self.terminal is not None

    @property
    def outcome(self) -> Outcome:
        """How the job ended (PENDING while it runs)."""
        match self.terminal:
            case JobComplete(stopped_early=True):
                return Outcome.STOPPED_EARLY
            case JobComplete():
                return Outcome.COMPLETED
            case JobFailed():
                return Outcome.FAILED
            case JobCancelled():
                return Outcome.CANCELLED
        return {FAILED: Outcome.LOST, ABANDONED: Outcome.ABANDONED}.get(self.state, Outcome.PENDING)

    # --- the one entry point ---------------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Instruction]:
        """Apply one event at time `now`; return the instructions for the shell, in order."""
        self._out = []
        before = self.state
        try:
            self._fire_due_deadlines(now)
            self._dispatch(event, now)
        except Exception as error:  # a bug must not escape a message handler: refuse and log
            log.exception("client core: %s failed", type(event).__name__)
            return [Refused(event, f"internal error: {error}")]
        assert self.state is before or self.state in TRANSITIONS[before], (before, self.state)
        return self._out

    def next_deadline(self) -> float | None:
        """The earliest time at which `TimerFired` has work to do, or None."""
        if self.state is BIDDING:
            return min(t for t in (self._response_deadline, self._window_ends) if t is not None)
        if self.state is ASSIGNED:
            return min(t for t in (self._probe_at, self._keepalive_at, self._head_due) if t is not None)
        return None

    def _dispatch(self, event: Event, now: float) -> None:
        match event:
            case BiddingOpened(workers=workers, bid_window=window):
                self._open_bidding(event, workers, window, now)
            case Attached(worker=worker):
                if self._refuse_unless(event, NEW):
                    return
                self._assign(worker, now)
                self._sync(0, now)
            case MessageReceived(sender=sender, message=message):
                self._on_message(sender, message, now)
            case SendReported():
                self._on_send_report(event, now)
            case OfferReady(sdp=sdp, options=options):
                if not self._refuse_unless(event, ASSIGNED, FINISHED):
                    self._send(RtcOffer(self.job_id, sdp, dict(options), job_key=self.job_key))
            case Reconnected():
                if self.state is ASSIGNED:
                    self._probe(now)
            case CancelRequested():
                if not self._refuse_unless(event, ASSIGNED):
                    self._send(JobCancel(self.job_id, job_key=self.job_key))
            case StopRequested():
                if not self._refuse_unless(event, ASSIGNED):
                    self._send(JobStop(self.job_id, job_key=self.job_key))
            case Abandoned():
                self._abandon(event)
            case TimerFired():
                pass  # due deadlines were fired above

    def _refuse_unless(self, event: Event, *states: ClientJobState) -> bool:
        if self.state in states:
            return False
        self._out.append(Refused(event, f"{type(event).__name__} does not apply while {self.state.value}"))
        return True

    def _send(self, message: JobRequest | JobCancel | JobAssignment | JobSync | JobStop | RtcOffer) -> None:
        assert self.worker is not None
        self._out.append(Send(self.worker, message))

    def _sync(self, after_seq: int, now: float) -> None:
        """Ask the worker for the events after `after_seq`; while queued this also renews the queue lease."""
        if self.queued:
            self._keepalive_at = now + self.timeouts.queue_keepalive
        self._send(JobSync(self.job_id, after_seq, job_key=self.job_key))

    # --- bidding -----------------------------------------------------------------------------------------------

    def _open_bidding(
        self, event: BiddingOpened, workers: tuple[str, ...], window: float, now: float
    ) -> None:
        if self._refuse_unless(event, NEW):
            return
        if not workers:
            self._out.append(Refused(event, "no candidate workers"))
            return
        self.state = BIDDING
        self._candidates = tuple(dict.fromkeys(workers))
        self._pending = set(self._candidates)
        self._bid_window = window
        self._response_deadline = now + self.timeouts.response
        request = self.request
        self._out.extend(Send(worker, request) for worker in self._candidates)

    def _on_bid(self, sender: str, response: JobResponse, now: float) -> None:
        if sender not in self._pending:
            return  # not asked, or already answered: ignored
        self._pending.discard(sender)
        if response.accepted and response.queued:
            start = response.estimated_start_seconds
            self._queue_offers[sender] = (
                math.inf if start is None else start,
                response.queue_position if response.queue_position is not None else 2**31,
            )
            if self._bid_window > 0 and self._window_ends is None:
                self._window_ends = now + self._bid_window
        elif response.accepted:
            self._accepted[sender] = response.estimated_duration_minutes or 0.0
            if self._bid_window <= 0:
                self._close_bidding(now)
                return
            if self._window_ends is None:
                self._window_ends = now + self._bid_window
        else:
            self._rejected[sender] = (response.reason or "rejected", response.details or ())
        if not self._pending:
            self._close_bidding(now)

    def _close_bidding(self, now: float) -> None:
        """Pick the winner and release every other candidate: an offer to run now (lowest estimate, first to
        accept on ties) beats any queued one; among queued offers the earliest estimated start wins."""
        if not self._accepted and not self._queue_offers:
            for worker in sorted(self._pending):
                self._rejected[worker] = (
                    "no answer",
                    [f"no job_response within {self.timeouts.response:g} s"],
                )
            silent = sorted(self._pending)  # a late acceptance from these is released at once
            self._out.extend(Send(worker, JobCancel(self.job_id)) for worker in silent)
            self._released.update(silent)
            self._fail(AllRejectedError(self._rejected))
            return
        if self._accepted:
            winner = min(self._accepted, key=lambda worker: self._accepted[worker])
        else:
            winner = min(self._queue_offers, key=lambda worker: self._queue_offers[worker])
        offered = [*self._accepted, *self._queue_offers, *sorted(self._pending)]
        losers = [worker for worker in offered if worker != winner]
        self._out.extend(Send(worker, JobCancel(self.job_id)) for worker in losers)
        self._released.update(losers)
        queued = winner in self._queue_offers and not self._accepted
        log.info(
            "job %s: worker %s won%s (%d other bid(s) released)",
            self.job_id,
            winner,
            " a queue entry" if queued else "",
            len(losers),
        )
        self._assign(winner, now)
        if queued:
            start, position = self._queue_offers[winner]
            self.queued, self._keepalive_at = True, now + self.timeouts.queue_keepalive
            self.queue_position = position if position < 2**31 else None
            self.estimated_start_seconds = start if math.isfinite(start) else None
        self._send(JobAssignment(self.job_id, job_key=self.job_key))
        self._out.append(
            WorkerChosen(winner, queued, self.queue_position, self.estimated_start_seconds)
            if queued
            else WorkerChosen(winner)
        )

    def _assign(self, worker: str, now: float) -> None:
        self.state, self.worker = ASSIGNED, worker
        self._response_deadline = self._window_ends = None
        self._pending.clear()
        self._probe_at = now + self.timeouts.liveness

    # --- following the job -------------------------------------------------------------------------------------

    def _on_message(self, sender: str, message: object, now: float) -> None:
        if self.state is BIDDING:
            if isinstance(message, JobResponse):
                self._on_bid(sender, message, now)
            return
        if self.state not in (ASSIGNED, FINISHED) or sender != self.worker:
            return  # not from this job's worker (a late bid, a stranger): ignored
        if (
            isinstance(message, JobStatus | JobComplete | JobFailed | JobCancelled)
            and message.seq is not None
        ):
            self._heard(now)
            self._on_job_event(message, now)
        elif isinstance(message, JobStatus) and message.status == "queued":
            self._heard(now)
            self._head_due = (
                None  # the queue report answers a keep-alive (a head is awaited again once it runs)
            )
            if self.state is ASSIGNED and not self._left_queue:
                self._enter_queue(message, now)
                self._out.append(QueueUpdate(message))
        elif isinstance(message, JobFailed) and self.queued and self.state is ASSIGNED:
            self._heard(now)  # a queue entry that ended before the job had numbered events (its lease, ...)
            error = message.error
            self._fail(JobFailedError(error.code, error.message + self._queued_note(), error.recoverable))
        elif isinstance(message, JobHead):
            self._heard(now)
            self._on_head(message, now)
        elif isinstance(message, AppError) and message.code == "CHANNEL_LOST":
            self._heard(now)
            self._out.append(ChannelLost())
        elif isinstance(message, AppError) and message.code == "UNKNOWN_JOB":
            if self.state is ASSIGNED:
                self._fail(
                    WorkerGoneError(
                        f"worker {sender} no longer holds job {self.job_id} (it restarted or let it go)"
                        + self._queued_note()
                    )
                )
        elif isinstance(message, JobResponse):
            return  # a repeated bid answer from the winner
        else:
            self._heard(now)
            self._out.append(ControlReply(message))  # type: ignore[arg-type]

    def _on_job_event(self, event: JobEvent, now: float) -> None:
        """Deliver in seq order, each once. An event past a gap is held; only the missing seqs are asked for
        (bounded `job_sync`), so nothing the client holds or may still receive is sent to it again."""
        assert event.seq is not None
        seq = event.seq
        if seq <= self.last_seq or seq in self._early:
            return  # a duplicate
        if seq > self.last_seq + 1:
            seen = self._seen()
            if len(self._early) < MAX_EARLY_EVENTS:
                self._early[seq] = event
            after = max(seen, self._asked)
            if seq - 1 > after and self.state is ASSIGNED:  # events reach us in order: these were lost
                log.info("job %s: events %d..%d missing; asking for them", self.job_id, after + 1, seq - 1)
                self._ask(after, seq - 1, now)
            return
        self._deliver(event, now)
        while self.terminal is None and self.last_seq + 1 in self._early:
            self._deliver(self._early.pop(self.last_seq + 1), now)
        if self.terminal is not None:
            self._early.clear()

    def _deliver(self, event: JobEvent, now: float) -> None:
        assert event.seq == self.last_seq + 1
        self.last_seq = event.seq
        self.history.append(event)
        if isinstance(event, JobStatus | JobComplete) and event.metrics is not None:
            self.metrics = event.metrics
        if isinstance(event, JobStatus) and event.status == "queued" and self.state is ASSIGNED:
            self._enter_queue(event, now)
        else:  # any other status (starting, running, ...) or the end: the job has left the queue
            self.queued, self._keepalive_at, self._left_queue = False, None, True
            self.queue_position = self.estimated_start_seconds = None
        self._out.append(Deliver(event))
        if not isinstance(event, JobStatus):
            self.terminal, self.state, self._probe_at, self._head_due = event, FINISHED, None, None

    def _enter_queue(self, status: JobStatus, now: float) -> None:
        """The worker says the job waits in its queue (at `queue_position`): keep its lease alive from now."""
        if not self.queued:
            self._keepalive_at = now + self.timeouts.queue_keepalive
        self.queued = True
        self.queue_position = status.queue_position
        self.estimated_start_seconds = status.estimated_start_seconds

    def _seen(self) -> int:
        """The highest seq received (delivered or held)."""
        return max(self.last_seq, max(self._early, default=0))

    def _ask(self, after: int, upto: int, now: float) -> None:
        """A bounded `job_sync` (seqs after..upto); while queued it also renews the queue lease."""
        if self.queued:
            self._keepalive_at = now + self.timeouts.queue_keepalive
        self._asked = max(self._asked, upto)
        if self.legacy_sync:  # a worker without `job_head`: everything after the last delivered event
            self._send(JobSync(self.job_id, self.last_seq, job_key=self.job_key))
            return
        if self._head_due is None:
            self._head_due = now + self.timeouts.head
        self._send(JobSync(self.job_id, after, job_key=self.job_key, upto_seq=upto))

    def _replay_all(self, now: float) -> None:
        """No `job_head` came in time: ask for every event after the last delivered one (duplicates are
        dropped by seq). A worker that never sent a `job_head` is asked that way from now on."""
        if not self._heads_seen and not self.legacy_sync:
            log.info(
                "job %s: worker %s sends no job_head; asking it for full replays", self.job_id, self.worker
            )
            self.legacy_sync = True
        self._head_due, self._asked = None, 0
        if self.queued:
            self._keepalive_at = now + self.timeouts.queue_keepalive
        self._send(JobSync(self.job_id, self.last_seq, job_key=self.job_key))

    def _probe(self, now: float) -> None:
        """Ask how far the job goes, replaying nothing: an event on its way is never sent twice."""
        last = max(self._seen(), self._asked)  # its `job_head` comes after every earlier request's answer
        self._ask(last, last, now)

    def _on_head(self, head: JobHead, now: float) -> None:
        """The answer to the latest bounded `job_sync`: every seq up to `head.last_seq` not received was lost."""
        self._heads_seen = True
        if self.state is not ASSIGNED:
            return
        if (
            head.upto_seq < self._asked
        ):  # a later request is still being answered (requests ask for rising seqs)
            self._head_due = now + self.timeouts.head
            return
        self._asked, self._head_due = 0, None
        missing = [seq for seq in range(self.last_seq + 1, head.last_seq + 1) if seq not in self._early]
        runs: list[tuple[int, int]] = []  # contiguous (after, upto) ranges
        for seq in missing:
            if runs and runs[-1][1] == seq - 1:
                runs[-1] = (runs[-1][0], seq)
            else:
                runs.append((seq - 1, seq))
        for after, upto in runs:
            self._ask(after, upto, now)

    def _heard(self, now: float) -> None:
        self._unreachable_since = None
        if self.state is ASSIGNED:
            self._probe_at = now + self.timeouts.liveness

    def _on_send_report(self, report: SendReported, now: float) -> None:
        if self.state is not ASSIGNED or report.to != self.worker:
            return
        if not report.refused:
            self._unreachable_since = None
            return
        since = self._unreachable_since if self._unreachable_since is not None else now
        self._unreachable_since = since
        if now - since >= self.timeouts.worker_gone:
            self._fail(
                WorkerGoneError(
                    f"worker {self.worker} left while holding job {self.job_id} ({report.code})"
                    + self._queued_note()
                )
            )

    def _queued_note(self) -> str:
        if not self.queued:
            return ""
        place = f" at position {self.queue_position}" if self.queue_position is not None else ""
        return f"; the job was still waiting in its queue{place} and never started: submit it again"

    def _fire_due_deadlines(self, now: float) -> None:
        if self.state is BIDDING:
            due = [t for t in (self._response_deadline, self._window_ends) if t is not None and t <= now]
            if due:
                self._close_bidding(now)
        elif self.state is ASSIGNED:
            probe_due = self._probe_at is not None and self._probe_at <= now
            keepalive_due = self._keepalive_at is not None and self._keepalive_at <= now
            head_overdue = self._head_due is not None and self._head_due <= now
            if head_overdue and self._unreachable_since is not None:
                self._head_due = None  # the request may never have reached the worker: ask again below
            if head_overdue and self._head_due is not None:  # the replay also probes and keeps alive
                self._probe_at = now + self.timeouts.liveness
                self._replay_all(now)
            elif probe_due or keepalive_due:
                # a silent worker is asked how far the job goes (replaying nothing); a queued job's lease is renewed
                self._probe_at = now + self.timeouts.liveness
                self._probe(now)

    # --- endings ----------------------------------------------------------------------------------------------

    def _fail(self, error: Exception) -> None:
        self.state, self.error, self._probe_at, self._keepalive_at = FAILED, error, None, None
        self._head_due = None
        self._response_deadline = self._window_ends = None
        self._out.append(Fail(error))  # type: ignore[arg-type]

    def _abandon(self, event: Abandoned) -> None:
        if self.state is BIDDING:  # nobody is assigned yet: release every candidate that may hold a bid
            releasable = [w for w in self._candidates if w not in self._rejected]
            self._out.extend(Send(worker, JobCancel(self.job_id)) for worker in releasable)
            self._released.update(releasable)
        elif self.state is ASSIGNED:
            self._send(JobCancel(self.job_id, job_key=self.job_key))
        elif self.state is not NEW:
            self._refuse_unless(event)
            return
        self.state, self._probe_at, self._keepalive_at = ABANDONED, None, None
        self._response_deadline = self._window_ends = self._head_due = None

    def validate_state(self) -> None:
        """Raise AssertionError when the core's data contradicts its state."""
        assert (self.worker is None) == (
            self.state in (NEW, BIDDING) or (self.state in (FAILED, ABANDONED) and self.worker is None)
        )
        assert (self.terminal is not None) == (self.state is FINISHED)
        assert [e.seq for e in self.history] == list(range(1, self.last_seq + 1)), "history is 1..last_seq"
        assert (self.state is BIDDING) == (self._response_deadline is not None)
        if self.state is ASSIGNED:
            assert self._probe_at is not None, "a followed job always has a liveness deadline"
        else:
            assert self._head_due is None, "only a followed job waits for a job_head"
        if self.worker is not None:
            assert self.worker not in self._released, "the winner is never released"
        if self.queued:
            assert self.state in (ASSIGNED, FAILED, ABANDONED), "only a held job waits in a queue"
        assert (self._keepalive_at is not None) == (self.queued and self.state is ASSIGNED), (
            "a job waiting in a queue (and only that) keeps its queue lease alive"
        )
        offered = set(self._accepted) | set(self._queue_offers)
        if self.state is not BIDDING and self.state is not NEW:
            assert len(offered - self._released - {self.worker}) == 0, "one entry per job in the room"
