"""The client's side of the job protocol as a pure core: bidding, assignment, seq tracking, liveness, outcome.

`ClientJobCore.handle(event, now)` applies one event and returns the instructions for the shell; it never
does IO, never sleeps and never raises out of `handle`. `next_deadline()` says when `TimerFired` has work.

Bidding is `bidding.py` (the choice; every other offer is released with `job_cancel` at once, so a job
holds at most one queue entry in the room); following the numbered events, with bounded `job_sync` asks and
the fallback to full replays, is `replay.py`; the state table is `table.py`. Liveness (a silent worker is
probed, an unreachable one given up) is `liveness.py`; a job waiting in the worker's queue, with the
`job_sync` keep-alives that renew its lease, is `queue_lease.py`; how the job ended is `outcome.py`. What is
here: the dispatch of events, which message from the worker means what, the deadlines due and the endings.
"""

from __future__ import annotations

import hashlib
import logging

import attrs

from fsm_worker.protocol.client.bidding import Bidding, Lost
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
from fsm_worker.protocol.client.invariants import check_invariants
from fsm_worker.protocol.client.liveness import Liveness
from fsm_worker.protocol.client.outcome import outcome_of
from fsm_worker.protocol.client.queue_lease import QueueLease
from fsm_worker.protocol.client.replay import SeqTracker, Sync
from fsm_worker.protocol.client.table import ABANDONED, ASSIGNED, BIDDING, FAILED, FINISHED, NEW, TRANSITIONS
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
        self.seq = SeqTracker(self.request.job_id, self.timeouts.head)
        self.terminal: JobEvent | None = None
        self.metrics: Metrics | None = None
        self.error: Exception | None = None
        self.bids = Bidding()
        self.liveness = Liveness(self.timeouts.liveness)
        self.lease = QueueLease(self.timeouts.queue_keepalive)  # waiting in the winner's queue (no slot yet)
        self._out: list[Instruction] = []

    @property
    def job_id(self) -> str:
        return self.request.job_id

    @property
    def last_seq(self) -> int:
        return self.seq.last_seq

    @property
    def history(self) -> list[JobEvent]:
        return self.seq.history

    @property
    def legacy_sync(self) -> bool:
        """This worker never answered with `job_head` in time: it is asked for full replays."""
        return self.seq.legacy_sync

    @property
    def _early(self) -> dict[int, JobEvent]:
        return self.seq.early

    @property
    def queued(self) -> bool:
        """The job waits in its worker's queue (no slot yet)."""
        return self.lease.queued

    @property
    def queue_position(self) -> int | None:
        return self.lease.position

    @property
    def estimated_start_seconds(self) -> float | None:
        return self.lease.estimated_start_seconds

    @property
    def finished(self) -> bool:
        return self.terminal is not None

    @property
    def outcome(self) -> Outcome:
        """How the job ended (PENDING while it runs)."""
        return outcome_of(self.terminal, self.state)

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
            return self.bids.deadline()
        if self.state is ASSIGNED:
            deadlines = (self.liveness.probe_at, self.lease.keepalive_at, self.seq.head_due)
            return min(t for t in deadlines if t is not None)
        return None

    def _dispatch(self, event: Event, now: float) -> None:
        match event:
            case BiddingOpened(workers=workers, bid_window=window):
                self._open_bidding(event, workers, window, now)
            case Attached(worker=worker):
                if self._refuse_unless(event, NEW):
                    return
                self._assign(worker, now)
                self._sync(Sync(0), now)
            case MessageReceived(sender=sender, message=message):
                self._on_message(sender, message, now)
            case SendReported():
                self._on_send_report(event, now)
            case OfferReady(sdp=sdp, options=options):
                if not self._refuse_unless(event, ASSIGNED, FINISHED):
                    self._send(RtcOffer(self.job_id, sdp, dict(options), job_key=self.job_key))
            case Reconnected():
                if self.state is ASSIGNED:
                    self._sync(self.seq.probe(now), now)
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

    def _sync(self, sync: Sync, now: float) -> None:
        """Send a `job_sync`; while queued this also renews the queue lease."""
        self.lease.synced(now)
        self._send(JobSync(self.job_id, sync.after_seq, job_key=self.job_key, upto_seq=sync.upto_seq))

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
        candidates = self.bids.open(workers, window, now + self.timeouts.response)
        request = self.request
        self._out.extend(Send(worker, request) for worker in candidates)

    def _close_bidding(self, now: float) -> None:
        """Pick the winner (`Bidding.close`) and release every other candidate."""
        choice = self.bids.close(self.timeouts.response)
        if isinstance(choice, Lost):
            self._out.extend(Send(worker, JobCancel(self.job_id)) for worker in choice.silent)
            self._fail(AllRejectedError(choice.rejected))
            return
        winner, losers, queued = choice.winner, choice.losers, choice.queued
        self._out.extend(Send(worker, JobCancel(self.job_id)) for worker in losers)
        log.info(
            "job %s: worker %s won%s (%d other bid(s) released)",
            self.job_id,
            winner,
            " a queue entry" if queued else "",
            len(losers),
        )
        self._assign(winner, now)
        if queued:
            self.lease.won(choice.queue_position, choice.estimated_start_seconds, now)
        self._send(JobAssignment(self.job_id, job_key=self.job_key))
        self._out.append(
            WorkerChosen(winner, queued, self.queue_position, self.estimated_start_seconds)
            if queued
            else WorkerChosen(winner)
        )

    def _assign(self, worker: str, now: float) -> None:
        self.state, self.worker = ASSIGNED, worker
        self.bids.end()
        self.bids.pending.clear()
        self.liveness.follow(now)

    # --- following the job -------------------------------------------------------------------------------------

    def _on_message(self, sender: str, message: object, now: float) -> None:
        if self.state is BIDDING:
            if isinstance(message, JobResponse) and self.bids.answer(sender, message, now):
                self._close_bidding(now)
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
            self.seq.head_due = (
                None  # the queue report answers a keep-alive (a head is awaited again once it runs)
            )
            if self.state is ASSIGNED and not self.lease.left:
                self.lease.enter(message, now)
                self._out.append(QueueUpdate(message))
        elif isinstance(message, JobFailed) and self.queued and self.state is ASSIGNED:
            self._heard(now)  # a queue entry that ended before the job had numbered events (its lease, ...)
            error = message.error
            self._fail(JobFailedError(error.code, error.message + self.lease.note(), error.recoverable))
        elif isinstance(message, JobHead):
            self._heard(now)
            for sync in self.seq.on_head(message, now, may_ask=self.state is ASSIGNED):
                self._sync(sync, now)
        elif isinstance(message, AppError) and message.code == "CHANNEL_LOST":
            self._heard(now)
            self._out.append(ChannelLost())
        elif isinstance(message, AppError) and message.code == "UNKNOWN_JOB":
            if self.state is ASSIGNED:
                self._fail(
                    WorkerGoneError(
                        f"worker {sender} no longer holds job {self.job_id} (it restarted or let it go)"
                        + self.lease.note()
                    )
                )
        elif isinstance(message, JobResponse):
            return  # a repeated bid answer from the winner
        else:
            self._heard(now)
            self._out.append(ControlReply(message))  # type: ignore[arg-type]

    def _on_job_event(self, event: JobEvent, now: float) -> None:
        """Deliver in seq order, each once; a gap is asked for (`SeqTracker.receive`)."""
        ready, asks = self.seq.receive(
            event, now, finished=self.terminal is not None, may_ask=self.state is ASSIGNED
        )
        for sync in asks:
            self._sync(sync, now)
        for ready_event in ready:
            self._deliver(ready_event, now)

    def _deliver(self, event: JobEvent, now: float) -> None:
        if isinstance(event, JobStatus | JobComplete) and event.metrics is not None:
            self.metrics = event.metrics
        if isinstance(event, JobStatus) and event.status == "queued" and self.state is ASSIGNED:
            self.lease.enter(event, now)
        else:  # any other status (starting, running, ...) or the end: the job has left the queue
            self.lease.leave()
        self._out.append(Deliver(event))
        if not isinstance(event, JobStatus):
            self.terminal, self.state, self.seq.head_due = event, FINISHED, None
            self.liveness.stop()

    def _heard(self, now: float) -> None:
        self.liveness.heard(now, following=self.state is ASSIGNED)

    def _on_send_report(self, report: SendReported, now: float) -> None:
        if self.state is not ASSIGNED or report.to != self.worker:
            return
        if not report.refused:
            self.liveness.delivered()
            return
        if self.liveness.refused(now) >= self.timeouts.worker_gone:
            self._fail(
                WorkerGoneError(
                    f"worker {self.worker} left while holding job {self.job_id} ({report.code})"
                    + self.lease.note()
                )
            )

    def _fire_due_deadlines(self, now: float) -> None:
        if self.state is BIDDING:
            if self.bids.due(now):
                self._close_bidding(now)
        elif self.state is ASSIGNED:
            probe_due, keepalive_due = self.liveness.due(now), self.lease.due(now)
            head_due = self.seq.head_due
            head_overdue = head_due is not None and head_due <= now
            if head_overdue and self.liveness.unreachable:
                self.seq.head_due = None  # the request may never have reached the worker: ask again below
            if head_overdue and self.seq.head_due is not None:  # the replay also probes and keeps alive
                self.liveness.follow(now)
                self._sync(self.seq.replay_all(self.worker), now)
            elif probe_due or keepalive_due:
                # a silent worker is asked how far the job goes (replaying nothing); a queued job's lease is renewed
                self.liveness.follow(now)
                self._sync(self.seq.probe(now), now)

    # --- endings ----------------------------------------------------------------------------------------------

    def _fail(self, error: Exception) -> None:
        self.state, self.error, self.seq.head_due = FAILED, error, None
        self.liveness.stop()
        self.lease.end()
        self.bids.end()
        self._out.append(Fail(error))  # type: ignore[arg-type]

    def _abandon(self, event: Abandoned) -> None:
        if self.state is BIDDING:  # nobody is assigned yet: release every candidate that may hold a bid
            self._out.extend(Send(worker, JobCancel(self.job_id)) for worker in self.bids.release_all())
        elif self.state is ASSIGNED:
            self._send(JobCancel(self.job_id, job_key=self.job_key))
        elif self.state is not NEW:
            self._refuse_unless(event)
            return
        self.state, self.seq.head_due = ABANDONED, None
        self.liveness.stop()
        self.lease.end()
        self.bids.end()

    def validate_state(self) -> None:
        """Raise AssertionError when the core's data contradicts its state (`invariants.py`)."""
        check_invariants(self)
