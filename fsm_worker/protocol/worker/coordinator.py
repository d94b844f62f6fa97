"""The job coordinator: the worker's side of the job protocol as one explicit, sans-IO state machine.

`TRANSITIONS` below is the whole protocol. Each row reads: on `trigger`, from `source`, if every guard holds,
go to `dest` (`STAY`: the status does not change) and run `action`. Rows for one trigger are tried in order,
and every trigger ends in a catch-all row, so each (status, event) pair has exactly one outcome.

`JobCoordinator.handle(event, now)` is the only entry point: it takes one event and the current time and
returns the instructions for the shells. It does no IO and never sleeps; deadlines are data
(`next_deadline()`), and the shell feeds `TimerFired` when its single timer goes off.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from transitions import Machine

from fsm_worker.protocol.messages import (
    MAX_TEXT_LENGTH,
    AppError,
    JobAssignment,
    JobCancel,
    JobCancelled,
    JobComplete,
    JobError,
    JobEvent,
    JobFailed,
    JobRequest,
    JobResponse,
    JobStatus,
    JobSync,
    Message,
    ProtocolError,
    ReservationExpired,
    RtcOffer,
    UnknownMessage,
    parse_message,
)
from fsm_worker.protocol.worker.capabilities import WorkerCapabilities, estimate_duration_minutes
from fsm_worker.protocol.worker.events import (
    AcceptOffer,
    Advertise,
    CleanupJob,
    Drain,
    Event,
    InputsReady,
    Instruction,
    Job,
    PeerMessage,
    Reservation,
    RunFailed,
    RunPhase,
    RunProgress,
    RunStarted,
    RunStopped,
    RunSucceeded,
    Send,
    StartRun,
    StopRun,
    TimerFired,
    WorkerStatus,
)

log = logging.getLogger(__name__)

AVAILABLE, RESERVED, BUSY = WorkerStatus.AVAILABLE, WorkerStatus.RESERVED, WorkerStatus.BUSY
ANY = "*"
STAY = None

RUN_EVENTS = ("run_started", "run_progress", "run_succeeded", "run_failed", "run_stopped")


def _row(
    trigger: str,
    source: WorkerStatus | Sequence[WorkerStatus] | str,
    dest: WorkerStatus | None,
    action: str,
    when: Sequence[str] = (),
    unless: Sequence[str] = (),
) -> dict[str, Any]:
    """One row of the table, as a `transitions` transition; a change of status is also advertised."""
    after = [action] if dest is STAY else [action, "advertise"]
    return {
        "trigger": trigger,
        "source": source,
        "dest": dest,
        "conditions": list(when),
        "unless": list(unless),
        "after": after,
    }


# fmt: off
TRANSITIONS: list[dict[str, Any]] = [
    # trigger            source             dest       action                   guards
    # -- a client asks the worker to take a job
    _row("job_request",    AVAILABLE,         STAY,      "reject_draining",       when=["is_draining"]),
    _row("job_request",    AVAILABLE,         RESERVED,  "accept_request",        when=["compatible"]),
    _row("job_request",    AVAILABLE,         STAY,      "reject_incompatible"),
    _row("job_request",    [RESERVED, BUSY],  STAY,      "accept_again",          when=["repeats_held_request"]),
    _row("job_request",    [RESERVED, BUSY],  STAY,      "reject_busy"),
    # -- the client that holds the reservation assigns the job
    _row("job_assignment", RESERVED,          BUSY,      "assign",                when=["for_reservation"]),
    _row("job_assignment", BUSY,              STAY,      "ignore_duplicate",      when=["for_current_job"]),
    _row("job_assignment", ANY,               STAY,      "refuse_assignment"),
    # -- the job's own client cancels it (a run in progress is stopped first)
    _row("job_cancel",     RESERVED,          AVAILABLE, "acknowledge_cancel",    when=["for_reservation"]),
    _row("job_cancel",     BUSY,              STAY,      "stop_run",              when=["for_current_job", "run_in_progress"]),
    _row("job_cancel",     BUSY,              AVAILABLE, "acknowledge_cancel",    when=["for_current_job"]),
    _row("job_cancel",     ANY,               STAY,      "ignore_cancel"),
    # -- the data channel, and replay of job events after a reconnect
    _row("rtc_offer",      BUSY,              STAY,      "accept_offer",          when=["for_current_job"]),
    _row("rtc_offer",      ANY,               STAY,      "accept_offer",          when=["for_retained_job"]),
    _row("rtc_offer",      ANY,               STAY,      "refuse_offer"),
    _row("job_sync",       ANY,               STAY,      "replay_events",         when=["for_known_job"]),
    _row("job_sync",       ANY,               STAY,      "refuse_sync"),
    # -- the run, as the job runner reports it
    _row("inputs_ready",   BUSY,              STAY,      "start_run",             when=["about_current_job", "awaiting_inputs"]),
    _row("run_started",    BUSY,              STAY,      "report_starting",       when=["about_current_job"]),
    _row("run_progress",   BUSY,              STAY,      "report_progress",       when=["about_current_job"]),
    _row("run_succeeded",  BUSY,              AVAILABLE, "finish_stopped_run",    when=["about_current_job", "stopping"]),
    _row("run_succeeded",  BUSY,              AVAILABLE, "report_complete",       when=["about_current_job"]),
    _row("run_failed",     BUSY,              AVAILABLE, "finish_stopped_run",    when=["about_current_job", "stopping"]),
    _row("run_failed",     BUSY,              AVAILABLE, "report_failed",         when=["about_current_job"]),
    _row("run_stopped",    BUSY,              AVAILABLE, "finish_stopped_run",    when=["about_current_job", "stopping"]),
    *[_row(name,           ANY,               STAY,      "ignore_stale_run_event") for name in ("inputs_ready", *RUN_EVENTS)],
    # -- deadlines
    _row("lease_expired",  RESERVED,          AVAILABLE, "expire_reservation"),
    _row("inputs_overdue", BUSY,              AVAILABLE, "fail_awaiting_inputs",  when=["awaiting_inputs"]),
    # -- graceful shutdown: a job that has not started fails; a running one finishes unless told to stop
    _row("drain",          RESERVED,          AVAILABLE, "release_reservation"),
    _row("drain",          BUSY,              STAY,      "stop_for_shutdown",     when=["cancel_running", "run_in_progress"]),
    _row("drain",          BUSY,              AVAILABLE, "fail_for_shutdown",     when=["awaiting_inputs"]),
    _row("drain",          ANY,               STAY,      "note_draining"),
]
# fmt: on

#: Triggers fired by deadlines rather than messages (they have no catch-all row: the core only fires them when due).
TIMED_TRIGGERS = ("lease_expired", "inputs_overdue")


@attrs.define
class Stimulus:
    """What a guard or action sees: the event's sender, its typed message or run data, the time, and details."""

    now: float
    sender: str | None = None
    message: Message | None = None
    job_id: str | None = None
    data: Any = None


@attrs.define
class _Retained:
    """A finished job kept for its client: its events for replay and, until `expires_at`, its files."""

    client_id: str
    expires_at: float
    history: list[JobEvent]
    files_kept: bool


@attrs.frozen
class CoordinatorConfig:
    """The worker protocol's timings; the defaults here are the only ones (the worker's settings use them)."""

    reservation_timeout: float = attrs.field(
        default=30.0, metadata={"help": "seconds a reservation waits for its job_assign"}
    )
    input_timeout: float = attrs.field(
        default=1800.0, metadata={"help": "seconds an assigned job waits for its inputs"}
    )
    retention: float = attrs.field(
        default=3600.0, metadata={"help": "seconds a finished job's events and results stay fetchable"}
    )
    stimulus_log_size: int = attrs.field(
        default=256, metadata={"help": "events kept in the core's stimulus log (for debugging)"}
    )


class JobCoordinator:
    """The worker's protocol state: status, reservation, current job, retained results. No IO.

    `state` (managed by `transitions`) is the status; use `status` to read it.
    """

    state: WorkerStatus

    def __init__(
        self,
        capabilities: WorkerCapabilities,
        config: CoordinatorConfig | None = None,
        estimator: Callable[[JobRequest], float] | None = None,
        check_config: Callable[[JobRequest], list[str]] | None = None,
    ) -> None:
        """`estimator` gives a job's duration in minutes; `check_config` lists what is wrong with its config."""
        self.capabilities = capabilities
        self.config = config or CoordinatorConfig()
        self._estimate = estimator or (lambda request: estimate_duration_minutes(request.config))
        self._check_config = check_config or (lambda request: [])
        self.reservation: Reservation | None = None
        self.current_job: Job | None = None
        self.phase: RunPhase | None = None
        self.draining = False
        self._stop_reason: str | None = None
        self._history: list[JobEvent] = []
        self._retained: dict[str, _Retained] = {}
        self._out: list[Instruction] = []
        #: The latest events with the status before and after each: explains how the core got where it is.
        self.stimulus_log: collections.deque[tuple[float, Event, WorkerStatus, WorkerStatus]] = (
            collections.deque(maxlen=self.config.stimulus_log_size)
        )
        self.machine = Machine(
            model=self,
            states=WorkerStatus,
            initial=AVAILABLE,
            transitions=TRANSITIONS,
            auto_transitions=False,
        )

    # --- the one entry point ----------------------------------------------------------------------------------

    @property
    def status(self) -> WorkerStatus:
        return self.state

    @property
    def pending_job_id(self) -> str | None:
        return self.reservation.job_id if self.reservation else None

    def handle(self, event: Event, now: float) -> list[Instruction]:
        """Apply one event at time `now`; return the instructions for the shells, in order."""
        self._out = []
        self._fire_due_deadlines(now)
        before = self.status
        match event:
            case PeerMessage(sender=sender, payload=payload):
                self._on_peer_message(sender, payload, now)
            case InputsReady(job_id=job_id):
                self._trigger("inputs_ready", Stimulus(now, job_id=job_id))
            case RunStarted(job_id=job_id):
                self._trigger("run_started", Stimulus(now, job_id=job_id))
            case RunProgress(job_id=job_id):
                self._trigger("run_progress", Stimulus(now, job_id=job_id, data=event))
            case RunSucceeded(job_id=job_id, result=result):
                self._trigger("run_succeeded", Stimulus(now, job_id=job_id, data=result))
            case RunFailed(job_id=job_id, error=error):
                self._trigger("run_failed", Stimulus(now, job_id=job_id, data=error))
            case RunStopped(job_id=job_id):
                self._trigger("run_stopped", Stimulus(now, job_id=job_id))
            case Drain(cancel_running=cancel_running):
                self._trigger("drain", Stimulus(now, data=cancel_running))
            case TimerFired():
                pass  # deadlines were fired above
        self.stimulus_log.append((now, event, before, self.state))
        return self._out

    def next_deadline(self) -> float | None:
        """The earliest time at which `TimerFired` has work to do, or None."""
        deadlines = [next(iter(self._retained.values())).expires_at] if self._retained else []
        if self.reservation is not None:
            deadlines.append(self.reservation.deadline)
        if self.current_job is not None and self.phase is RunPhase.AWAITING_INPUTS:
            deadlines.append(self.current_job.assigned_at + self.config.input_timeout)
        return min(deadlines, default=None)

    def retained_job_ids(self) -> list[str]:
        """Finished jobs whose files are kept for their clients."""
        return [job_id for job_id, retained in self._retained.items() if retained.files_kept]

    # --- routing ----------------------------------------------------------------------------------------------

    def _on_peer_message(self, sender: str, payload: object, now: float) -> None:
        try:
            message = parse_message(payload)
        except ProtocolError as error:
            job_id = payload.get("job_id") if isinstance(payload, dict) else None
            log.warning("invalid message from %s: %s", sender, error)
            self._send(
                sender, AppError("INVALID_MESSAGE", str(error), job_id if isinstance(job_id, str) else None)
            )
            return
        if isinstance(message, UnknownMessage):
            log.warning("unhandled peer message type %r from %s", message.app_message_type, sender)
            return
        if not isinstance(message, JobRequest | JobAssignment | JobCancel | RtcOffer | JobSync):
            log.warning("peer message type %r is not for a worker (from %s)", message.TYPE, sender)
            return
        self._trigger(message.TYPE, Stimulus(now, sender=sender, message=message, job_id=message.job_id))

    def _trigger(self, name: str, stimulus: Stimulus) -> None:
        self.machine.events[name].trigger(self, stimulus)

    def _fire_due_deadlines(self, now: float) -> None:
        if self.reservation is not None and now >= self.reservation.deadline:
            self._trigger("lease_expired", Stimulus(now, job_id=self.reservation.job_id))
        job = self.current_job
        awaiting = job is not None and self.phase is RunPhase.AWAITING_INPUTS
        if job is not None and awaiting and now >= job.assigned_at + self.config.input_timeout:
            self._trigger("inputs_overdue", Stimulus(now, job_id=job.job_id))
        while self._retained:  # kept in order of expiry: retention is one constant and time only moves on
            job_id, retained = next(iter(self._retained.items()))
            if now < retained.expires_at:
                break
            del self._retained[job_id]
            if retained.files_kept:
                self._out.append(CleanupJob(job_id))

    # --- guards -----------------------------------------------------------------------------------------------

    def is_draining(self, s: Stimulus) -> bool:
        return self.draining

    def compatible(self, s: Stimulus) -> bool:
        assert isinstance(s.message, JobRequest)
        return not self._refusals(s.message)

    def repeats_held_request(self, s: Stimulus) -> bool:
        held = self.reservation or self.current_job
        return held is not None and (held.job_id, held.client_id) == (s.job_id, s.sender)

    def for_reservation(self, s: Stimulus) -> bool:
        held = self.reservation
        return held is not None and (held.job_id, held.client_id) == (s.job_id, s.sender)

    def for_current_job(self, s: Stimulus) -> bool:
        job = self.current_job
        return job is not None and (job.job_id, job.client_id) == (s.job_id, s.sender)

    def for_retained_job(self, s: Stimulus) -> bool:
        retained = self._retained.get(s.job_id or "")
        return retained is not None and retained.files_kept and retained.client_id == s.sender

    def for_known_job(self, s: Stimulus) -> bool:
        retained = self._retained.get(s.job_id or "")
        return self.for_current_job(s) or (retained is not None and retained.client_id == s.sender)

    def about_current_job(self, s: Stimulus) -> bool:
        return self.current_job is not None and self.current_job.job_id == s.job_id

    def awaiting_inputs(self, s: Stimulus) -> bool:
        return self.phase is RunPhase.AWAITING_INPUTS

    def run_in_progress(self, s: Stimulus) -> bool:
        return self.phase in (RunPhase.STARTING, RunPhase.RUNNING, RunPhase.STOPPING)

    def stopping(self, s: Stimulus) -> bool:
        return self.phase is RunPhase.STOPPING

    def cancel_running(self, s: Stimulus) -> bool:
        return bool(s.data)

    # --- actions: requests and reservations -------------------------------------------------------------------

    def reject_draining(self, s: Stimulus) -> None:
        self._reply_rejected(s, "draining", ["the worker is shutting down"])

    def accept_request(self, s: Stimulus) -> None:
        assert isinstance(s.message, JobRequest) and s.sender is not None
        estimate = self._estimate(s.message)
        self.reservation = Reservation(
            s.message.job_id, s.sender, s.message, estimate, s.now + self.config.reservation_timeout
        )
        log.info("job %s reserved for %s (estimated %.2f min)", s.job_id, s.sender, estimate)
        self._send(s.sender, JobResponse(s.message.job_id, True, estimated_duration_minutes=estimate))

    def reject_incompatible(self, s: Stimulus) -> None:
        assert isinstance(s.message, JobRequest)
        reasons = self._refusals(s.message)
        log.info("job %s from %s is incompatible: %s", s.job_id, s.sender, "; ".join(reasons))
        self._reply_rejected(s, "incompatible", reasons)

    def accept_again(self, s: Stimulus) -> None:
        held = self.reservation or self.current_job
        assert held is not None and s.sender is not None
        self._send(s.sender, JobResponse(held.job_id, True, held.estimated_duration_minutes))

    def reject_busy(self, s: Stimulus) -> None:
        self._reply_rejected(s, "busy", None)

    def expire_reservation(self, s: Stimulus) -> None:
        held = self._take_reservation()
        log.info("reservation of job %s for %s expired", held.job_id, held.client_id)
        self._send(held.client_id, ReservationExpired(held.job_id))

    def release_reservation(self, s: Stimulus) -> None:
        self.draining = True
        held = self._take_reservation()
        log.info("released the reservation of job %s: shutting down", held.job_id)
        self._send(held.client_id, ReservationExpired(held.job_id))

    # --- actions: assignment and cancellation -----------------------------------------------------------------

    def assign(self, s: Stimulus) -> None:
        held = self._take_reservation()
        self.current_job = Job(
            held.job_id, held.client_id, held.request, s.now, held.estimated_duration_minutes
        )
        self.phase = RunPhase.AWAITING_INPUTS
        self._history = []
        log.info(
            "Job assigned and ready for WebRTC connection (job %s, client %s)", held.job_id, held.client_id
        )

    def ignore_duplicate(self, s: Stimulus) -> None:
        log.info("duplicate job_assignment for running job %s ignored", s.job_id)

    def refuse_assignment(self, s: Stimulus) -> None:
        assert s.sender is not None
        log.warning("job_assignment for %s from %s matches no reservation of it", s.job_id, s.sender)
        text = "no reservation for this job is held for you"
        self._send(s.sender, AppError("INVALID_ASSIGNMENT", text, s.job_id))

    def acknowledge_cancel(self, s: Stimulus) -> None:
        if self.reservation is not None:
            held = self._take_reservation()
            self._send(held.client_id, JobCancelled(held.job_id))
            log.info("reservation of job %s cancelled by its client", held.job_id)
            return
        self._finish_job(s, lambda seq, job_id: JobCancelled(job_id, seq), keep_files=False)

    def stop_run(self, s: Stimulus) -> None:
        self._request_stop("cancel")

    def ignore_cancel(self, s: Stimulus) -> None:
        log.warning("job_cancel for %s from %s: not a job of this sender here; ignored", s.job_id, s.sender)

    # --- actions: data channel and replay ---------------------------------------------------------------------

    def accept_offer(self, s: Stimulus) -> None:
        assert isinstance(s.message, RtcOffer) and s.sender is not None
        self._out.append(AcceptOffer(s.message.job_id, s.sender, s.message.sdp, s.message.options))

    def refuse_offer(self, s: Stimulus) -> None:
        assert s.sender is not None
        log.warning("rtc_offer for %s from %s refused: not its assigned client", s.job_id, s.sender)
        self._send(s.sender, AppError("NOT_ASSIGNED", "this job is not assigned to you here", s.job_id))

    def replay_events(self, s: Stimulus) -> None:
        assert isinstance(s.message, JobSync) and s.sender is not None
        retained = self._retained.get(s.message.job_id)
        history = self._history if self.for_current_job(s) or retained is None else retained.history
        for message in history[s.message.after_seq :]:
            self._send(s.sender, message)

    def refuse_sync(self, s: Stimulus) -> None:
        assert s.sender is not None
        self._send(s.sender, AppError("UNKNOWN_JOB", "no such job of yours here", s.job_id))

    # --- actions: the run -------------------------------------------------------------------------------------

    def start_run(self, s: Stimulus) -> None:
        assert self.current_job is not None
        self.phase = RunPhase.STARTING
        self._out.append(StartRun(self.current_job))

    def report_starting(self, s: Stimulus) -> None:
        job = self.current_job
        assert job is not None
        if self.phase is RunPhase.STARTING:
            self.phase = RunPhase.RUNNING
            self._job_event(
                lambda seq, job_id: JobStatus(job_id, "starting", 0.0, f"starting {job.job_type}", seq)
            )

    def report_progress(self, s: Stimulus) -> None:
        if self.phase is not RunPhase.RUNNING:
            return
        progress = min(max(s.data.progress, 0.0), 1.0)
        text = s.data.message[:MAX_TEXT_LENGTH]
        self._job_event(lambda seq, job_id: JobStatus(job_id, "running", progress, text, seq))

    def report_complete(self, s: Stimulus) -> None:
        self._finish_job(s, lambda seq, job_id: JobComplete(job_id, s.data, seq), keep_files=True)

    def report_failed(self, s: Stimulus) -> None:
        self._finish_job(s, lambda seq, job_id: JobFailed(job_id, s.data, seq), keep_files=True)

    def finish_stopped_run(self, s: Stimulus) -> None:
        if self._stop_reason == "cancel":
            self._finish_job(s, lambda seq, job_id: JobCancelled(job_id, seq), keep_files=False)
        else:
            self._finish_job(s, lambda seq, job_id: JobFailed(job_id, _SHUTDOWN_ERROR, seq), keep_files=True)

    def ignore_stale_run_event(self, s: Stimulus) -> None:
        log.debug("run event for %s ignored: not the current run", s.job_id)

    def fail_awaiting_inputs(self, s: Stimulus) -> None:
        error = JobError("INPUT_TIMEOUT", "the job's inputs did not arrive in time", recoverable=True)
        self._finish_job(s, lambda seq, job_id: JobFailed(job_id, error, seq), keep_files=False)

    # --- actions: shutdown ------------------------------------------------------------------------------------

    def stop_for_shutdown(self, s: Stimulus) -> None:
        self.draining = True
        self._request_stop("shutdown")

    def fail_for_shutdown(self, s: Stimulus) -> None:
        self.draining = True
        self._finish_job(s, lambda seq, job_id: JobFailed(job_id, _SHUTDOWN_ERROR, seq), keep_files=False)

    def note_draining(self, s: Stimulus) -> None:
        self.draining = True

    def advertise(self, s: Stimulus) -> None:
        held = self.reservation or self.current_job
        self._out.append(Advertise(self.status, held.job_id if held else None))

    # --- helpers ----------------------------------------------------------------------------------------------

    def _refusals(self, request: JobRequest) -> list[str]:
        reasons = self.capabilities.incompatibilities(request) or self._check_config(request)
        if request.job_id in self._retained:
            reasons.append(f"job id {request.job_id!r} was already used on this worker")
        return reasons

    def _reply_rejected(self, s: Stimulus, reason: str, details: list[str] | None) -> None:
        assert s.sender is not None and s.job_id is not None
        self._send(
            s.sender, JobResponse(s.job_id, False, reason=reason, details=tuple(details or ()) or None)
        )

    def _take_reservation(self) -> Reservation:
        held = self.reservation
        assert held is not None
        self.reservation = None
        return held

    def _request_stop(self, reason: str) -> None:
        job = self.current_job
        assert job is not None
        if self.phase is not RunPhase.STOPPING:
            self.phase = RunPhase.STOPPING
            self._out.append(StopRun(job.job_id))
        if reason == "cancel" or self._stop_reason is None:
            self._stop_reason = reason

    def _job_event(self, build: Callable[[int, str], JobEvent]) -> None:
        job = self.current_job
        assert job is not None
        message = build(len(self._history) + 1, job.job_id)
        self._history.append(message)
        self._send(job.client_id, message)

    def _finish_job(self, s: Stimulus, build: Callable[[int, str], JobEvent], keep_files: bool) -> None:
        """Send the job's terminal event, keep its history (and maybe files) for its client, and let it go."""
        self._job_event(build)
        job = self.current_job
        assert job is not None
        expires = s.now + self.config.retention
        self._retained[job.job_id] = _Retained(job.client_id, expires, self._history, keep_files)
        if not keep_files:
            self._out.append(CleanupJob(job.job_id))
        self.current_job, self.phase, self._stop_reason, self._history = None, None, None, []

    def _send(self, to: str, message: Message) -> None:
        self._out.append(Send(to, message))

    # --- invariants (checked by the tests after every step) ---------------------------------------------------

    def validate_state(self, now: float) -> None:
        """Raise AssertionError when the core's data contradicts its status."""
        status = self.status
        assert (status is RESERVED) == (self.reservation is not None), "reserved ⇔ one pending reservation"
        assert (status is BUSY) == (self.current_job is not None), "busy ⇔ exactly one current job"
        assert (self.phase is None) == (self.current_job is None), "a run phase only while busy"
        if self.reservation is not None:
            assert self.reservation.deadline > now, "a held reservation has a future deadline"
        if self.phase is not RunPhase.STOPPING:
            assert self._stop_reason is None, "a stop reason only while stopping"


_SHUTDOWN_ERROR = JobError(
    "WORKER_SHUTDOWN", "the worker shut down before the job finished", recoverable=True
)
