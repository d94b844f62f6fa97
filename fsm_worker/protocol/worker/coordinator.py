"""The job coordinator: the worker's side of the job protocol as one explicit, sans-IO state machine.

`table.TRANSITIONS` is the whole protocol; this module holds its guards and actions. `JobCoordinator.handle(
event, now)` is the only entry point: it takes one event and the current time and returns the instructions for
the shells, in the order they must be carried out. It does no IO and never sleeps; deadlines are data
(`next_deadline()`), and the shell feeds `TimerFired` when its single timer goes off.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

import attrs
from transitions import Machine

from fsm_worker.protocol.messages import (
    MAX_METRIC_FIELDS,
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
    JobResult,
    JobStatus,
    JobStop,
    JobSync,
    Message,
    Metrics,
    ProtocolError,
    ReservationExpired,
    RtcAnswer,
    RtcOffer,
    UnknownMessage,
    parse_message,
)
from fsm_worker.protocol.worker.capabilities import WorkerCapabilities, estimate_duration_minutes
from fsm_worker.protocol.worker.events import (
    AcceptOffer,
    Advertise,
    ChannelAnswered,
    ChannelFailed,
    ChannelOpened,
    CleanupJob,
    CloseChannel,
    Drain,
    Event,
    InputsReady,
    Instruction,
    Job,
    JobFilesRemoved,
    PeerMessage,
    PublishResults,
    Reservation,
    RunFailed,
    RunProgress,
    RunStarted,
    RunStopped,
    RunSucceeded,
    Send,
    StartRun,
    StopRun,
    TimerFired,
    WorkerState,
    WorkerStatus,
)
from fsm_worker.protocol.worker.table import ANY, STAY, TIMED_TRIGGERS, TRANSITIONS

log = logging.getLogger(__name__)

__all__ = ["ANY", "STAY", "TIMED_TRIGGERS", "TRANSITIONS", "CoordinatorConfig", "JobCoordinator", "Stimulus"]

#: The triggers of the events that are not peer messages.
_TRIGGERS: dict[type, str] = {
    InputsReady: "inputs_ready",
    RunStarted: "run_started",
    RunProgress: "run_progress",
    RunSucceeded: "run_succeeded",
    RunFailed: "run_failed",
    RunStopped: "run_stopped",
    ChannelAnswered: "channel_answered",
    ChannelOpened: "channel_opened",
    ChannelFailed: "channel_failed",
    JobFilesRemoved: "job_files_removed",
    Drain: "drain",
}
_WORKER_BOUND = JobRequest | JobAssignment | JobCancel | JobStop | RtcOffer | JobSync


@attrs.frozen
class Stimulus:
    """What a guard or action sees: the time, the event, and for a peer message its sender and typed message."""

    now: float
    event: Event | None = None
    sender: str | None = None
    message: Message | None = None
    job_id: str | None = None


@attrs.define
class _Retained:
    """A finished job kept for its client: its events for replay and, until `expires_at`, its files."""

    client_id: str
    expires_at: float
    history: list[JobEvent]
    files_kept: bool


@attrs.frozen
class CoordinatorConfig:
    reservation_timeout: float = 30.0
    input_timeout: float = 1800.0
    retention: float = 3600.0
    stimulus_log_size: int = 256


class JobCoordinator:
    """The worker's protocol state: state, reservation, current job, retained results. No IO.

    `state` (managed by `transitions`) is a `WorkerState`; `status` is the advertised part of it.
    """

    state: WorkerState

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
        self.draining = False
        self._started_at = 0.0
        self._history: list[JobEvent] = []
        self._retained: dict[str, _Retained] = {}
        self._offers: dict[str, str] = {}  # job id → the SDP of the offer its channel answers
        self._out: list[Instruction] = []
        self._mark = 0  # where the current trigger's instructions begin in `_out`
        #: The latest events with the state before and after each: explains how the core got where it is.
        self.stimulus_log: collections.deque[tuple[float, Event, WorkerState, WorkerState]] = (
            collections.deque(maxlen=self.config.stimulus_log_size)
        )
        self.machine = Machine(
            model=self,
            states=WorkerState,
            initial=WorkerState.AVAILABLE,
            transitions=TRANSITIONS,
            auto_transitions=False,
        )

    # --- the one entry point ----------------------------------------------------------------------------------

    @property
    def status(self) -> WorkerStatus:
        return self.state.status

    @property
    def pending_job_id(self) -> str | None:
        return self.reservation.job_id if self.reservation else None

    def handle(self, event: Event, now: float) -> list[Instruction]:
        """Apply one event at time `now`; return the instructions for the shells, in order."""
        self._out = []
        self._fire_due_deadlines(now)
        before = self.state
        if isinstance(event, PeerMessage):
            self._on_peer_message(event, now)
        elif not isinstance(event, TimerFired):  # deadlines were fired above
            self._trigger(_TRIGGERS[type(event)], Stimulus(now, event, job_id=getattr(event, "job_id", None)))
        self.stimulus_log.append((now, event, before, self.state))
        return self._out

    def next_deadline(self) -> float | None:
        """The earliest time at which `TimerFired` has work to do, or None."""
        deadlines = [next(iter(self._retained.values())).expires_at] if self._retained else []
        if self.reservation is not None:
            deadlines.append(self.reservation.deadline)
        if self.current_job is not None and self.state is WorkerState.AWAITING_INPUTS:
            deadlines.append(self.current_job.assigned_at + self.config.input_timeout)
        return min(deadlines, default=None)

    def retained_job_ids(self) -> list[str]:
        """Finished jobs whose files are kept for their clients (for tests and diagnostics)."""
        return [job_id for job_id, retained in self._retained.items() if retained.files_kept]

    # --- routing ----------------------------------------------------------------------------------------------

    def _on_peer_message(self, event: PeerMessage, now: float) -> None:
        sender, payload = event.sender, event.payload
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
        if not isinstance(message, _WORKER_BOUND):
            log.warning("peer message type %r is not for a worker (from %s)", message.TYPE, sender)
            return
        self._trigger(message.TYPE, Stimulus(now, event, sender, message, message.job_id))

    def _trigger(self, name: str, stimulus: Stimulus) -> None:
        self._mark = len(self._out)
        self.machine.events[name].trigger(self, stimulus)

    def _fire_due_deadlines(self, now: float) -> None:
        if self.reservation is not None and now >= self.reservation.deadline:
            self._trigger("lease_expired", Stimulus(now, job_id=self.reservation.job_id))
        job = self.current_job
        awaiting = job is not None and self.state is WorkerState.AWAITING_INPUTS
        if job is not None and awaiting and now >= job.assigned_at + self.config.input_timeout:
            self._trigger("inputs_overdue", Stimulus(now, job_id=job.job_id))
        while self._retained:  # kept in order of expiry: retention is one constant and time only moves on
            job_id, retained = next(iter(self._retained.items()))
            if now < retained.expires_at:
                break
            del self._retained[job_id]
            if retained.files_kept:
                self._forget_files(job_id)

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

    def for_channel_job(self, s: Stimulus) -> bool:
        assert isinstance(s.event, ChannelAnswered)
        owner = Stimulus(s.now, s.event, s.event.client_id, job_id=s.job_id)
        return self.for_current_job(owner) or self.for_retained_job(owner)

    def repeats_last_offer(self, s: Stimulus) -> bool:
        assert isinstance(s.message, RtcOffer)
        return self._offers.get(s.message.job_id) == s.message.sdp

    def about_current_job(self, s: Stimulus) -> bool:
        return self.current_job is not None and self.current_job.job_id == s.job_id

    def cancel_running(self, s: Stimulus) -> bool:
        assert isinstance(s.event, Drain)
        return s.event.cancel_running

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
        held = self._take_reservation()
        log.info("released the reservation of job %s: shutting down", held.job_id)
        self._send(held.client_id, ReservationExpired(held.job_id))

    # --- actions: assignment, cancellation, soft stop ---------------------------------------------------------

    def assign(self, s: Stimulus) -> None:
        held = self._take_reservation()
        self.current_job = Job(
            held.job_id, held.client_id, held.request, s.now, held.estimated_duration_minutes
        )
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

    def cancel_reservation(self, s: Stimulus) -> None:
        held = self._take_reservation()
        self._send(held.client_id, JobCancelled(held.job_id))
        log.info("reservation of job %s cancelled by its client", held.job_id)

    def acknowledge_cancel(self, s: Stimulus) -> None:
        self._finish_job(s, lambda seq, job_id: JobCancelled(job_id, seq), keep_files=False)

    def stop_run(self, s: Stimulus) -> None:
        assert self.current_job is not None
        self._out.append(StopRun(self.current_job.job_id, graceful=False))

    def note_cancel(self, s: Stimulus) -> None:
        log.info("job %s: cancelled by its client while its run stops", s.job_id)

    def ignore_cancel(self, s: Stimulus) -> None:
        log.warning("job_cancel for %s from %s: not a job of this sender here; ignored", s.job_id, s.sender)

    def stop_early(self, s: Stimulus) -> None:
        assert self.current_job is not None
        log.info("job %s: its client stops it early", s.job_id)
        self._out.append(StopRun(self.current_job.job_id, graceful=True))

    def ignore_stop(self, s: Stimulus) -> None:
        log.warning(
            "job_stop for %s from %s: not a running job of this sender here; ignored", s.job_id, s.sender
        )

    # --- actions: data channel and replay ---------------------------------------------------------------------

    def accept_offer(self, s: Stimulus) -> None:
        assert isinstance(s.message, RtcOffer) and s.sender is not None
        job_id = s.message.job_id
        self._offers[job_id] = s.message.sdp
        current = self.current_job is not None and self.current_job.job_id == job_id
        committed = not current or self.state is not WorkerState.AWAITING_INPUTS
        self._out.append(
            AcceptOffer(job_id, s.sender, s.message.sdp, s.message.options, committed, not current)
        )

    def ignore_repeated_offer(self, s: Stimulus) -> None:
        log.info("repeated rtc_offer for job %s ignored (delivered twice)", s.job_id)

    def refuse_offer(self, s: Stimulus) -> None:
        assert s.sender is not None
        log.warning("rtc_offer for %s from %s refused: not its assigned client", s.job_id, s.sender)
        self._send(s.sender, AppError("NOT_ASSIGNED", "this job is not assigned to you here", s.job_id))

    def send_answer(self, s: Stimulus) -> None:
        assert isinstance(s.event, ChannelAnswered)
        answer = s.event
        self._send(answer.client_id, RtcAnswer(answer.job_id, answer.sdp, answer.options))

    def ignore_channel_event(self, s: Stimulus) -> None:
        log.info("data channel event for job %s ignored: the job is gone", s.job_id)

    def note_channel_open(self, s: Stimulus) -> None:
        log.info("data channel open for job %s", s.job_id)

    def report_channel_failure(self, s: Stimulus) -> None:
        assert isinstance(s.event, ChannelFailed)
        failure = s.event
        log.warning("data channel for job %s failed: %s", failure.job_id, failure.reason)
        self._offers.pop(failure.job_id, None)
        self._out.append(CloseChannel(failure.job_id))
        text = failure.reason[:MAX_TEXT_LENGTH]
        self._send(failure.client_id, AppError("RTC_SETUP_FAILED", text, failure.job_id))

    def note_files_removed(self, s: Stimulus) -> None:
        log.info("job %s: work directory removed", s.job_id)

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
        self._out.append(StartRun(self.current_job))

    def report_starting(self, s: Stimulus) -> None:
        job = self.current_job
        assert job is not None
        self._started_at = s.now
        self._job_event(
            lambda seq, job_id: JobStatus(job_id, "starting", 0.0, f"starting {job.job_type}", seq)
        )

    def report_progress(self, s: Stimulus) -> None:
        assert isinstance(s.event, RunProgress)
        progress = min(max(s.event.progress, 0.0), 1.0)
        text = s.event.message[:MAX_TEXT_LENGTH]
        metrics = wire_metrics(s.event.metrics)
        self._job_event(lambda seq, job_id: JobStatus(job_id, "running", progress, text, seq, metrics))

    def report_complete(self, s: Stimulus) -> None:
        assert isinstance(s.event, RunSucceeded)
        result, metrics = s.event.result, wire_metrics(s.event.metrics)
        self._finish_job(s, lambda seq, job_id: JobComplete(job_id, result, seq, metrics), keep_files=True)

    def report_stopped_early(self, s: Stimulus) -> None:
        if isinstance(s.event, RunSucceeded):
            result, metrics = s.event.result, wire_metrics(s.event.metrics)
        else:  # stopped before it could report a result: the time it ran, no model size
            result, metrics = JobResult(round((s.now - self._started_at) / 60, 3), None), None

        def build(seq: int, job_id: str) -> JobEvent:
            return JobComplete(job_id, result, seq, metrics, stopped_early=True)

        self._finish_job(s, build, keep_files=True)

    def report_failed(self, s: Stimulus) -> None:
        assert isinstance(s.event, RunFailed)
        error = s.event.error
        self._finish_job(s, lambda seq, job_id: JobFailed(job_id, error, seq), keep_files=True)

    def fail_stopped_for_shutdown(self, s: Stimulus) -> None:
        self._finish_job(s, lambda seq, job_id: JobFailed(job_id, _SHUTDOWN_ERROR, seq), keep_files=True)

    def ignore_stale_run_event(self, s: Stimulus) -> None:
        log.debug("run event for %s ignored: not the current run, or not now", s.job_id)

    def fail_awaiting_inputs(self, s: Stimulus) -> None:
        error = JobError("INPUT_TIMEOUT", "the job's inputs did not arrive in time", recoverable=True)
        self._finish_job(s, lambda seq, job_id: JobFailed(job_id, error, seq), keep_files=False)

    # --- actions: shutdown ------------------------------------------------------------------------------------

    def begin_draining(self, s: Stimulus) -> None:
        self.draining = True

    def stop_for_shutdown(self, s: Stimulus) -> None:
        assert self.current_job is not None
        self._out.append(StopRun(self.current_job.job_id, graceful=False))

    def stop_now(self, s: Stimulus) -> None:
        assert self.current_job is not None
        log.info("job %s: shutting down, its early stop becomes immediate", self.current_job.job_id)
        self._out.append(StopRun(self.current_job.job_id, graceful=False))

    def fail_for_shutdown(self, s: Stimulus) -> None:
        self._finish_job(s, lambda seq, job_id: JobFailed(job_id, _SHUTDOWN_ERROR, seq), keep_files=False)

    def wait_for_run(self, s: Stimulus) -> None:
        assert self.current_job is not None
        log.warning(
            "shutting down: waiting for job %s to finish (again to stop it now)", self.current_job.job_id
        )

    def note_draining(self, s: Stimulus) -> None:
        log.info("draining: no new jobs")

    def advertise(self, s: Stimulus) -> None:
        """Publish the new status before the messages that follow from it (a client reacting to one of them
        already discovers the new status)."""
        held = self.reservation or self.current_job
        self._out.insert(self._mark, Advertise(self.status, held.job_id if held else None))

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
        if keep_files:
            self._out.append(PublishResults(job.job_id))
        else:
            self._forget_files(job.job_id)
        self.current_job, self._history = None, []

    def _forget_files(self, job_id: str) -> None:
        self._offers.pop(job_id, None)
        self._out.append(CleanupJob(job_id))

    def _send(self, to: str, message: Message) -> None:
        self._out.append(Send(to, message))

    # --- invariants (checked by the tests after every step) ---------------------------------------------------

    def validate_state(self, now: float) -> None:
        """Raise AssertionError when the core's data contradicts its state."""
        status = self.status
        assert (status is WorkerStatus.RESERVED) == (self.reservation is not None), "reserved ⇔ a reservation"
        assert (status is WorkerStatus.BUSY) == (self.current_job is not None), "busy ⇔ one current job"
        if self.reservation is not None:
            assert self.reservation.deadline > now, "a held reservation has a future deadline"
        if self.current_job is not None:
            assert self.current_job.job_id not in self._retained, "the current job is not also retained"
        assert set(self._offers) <= {*self._retained, *self._current_ids()}, "offers only for jobs held here"
        if self.state is WorkerState.AWAITING_INPUTS:
            assert self.current_job is not None
            assert now < self.current_job.assigned_at + self.config.input_timeout, "inputs not yet overdue"
        if self.draining:
            assert self.status is not WorkerStatus.RESERVED, "a draining worker holds no reservation"
        expiries = [retained.expires_at for retained in self._retained.values()]
        assert expiries == sorted(expiries) and all(t > now for t in expiries), "retention in order, future"

    def _current_ids(self) -> list[str]:
        return [self.current_job.job_id] if self.current_job else []


def wire_metrics(reported: dict[str, Any]) -> Metrics | None:
    """The numbers a job reported that fit the wire's `Metrics` (known names typed, other numbers in `extra`);
    None when there are none. Values that do not fit are dropped, never an error."""
    known: dict[str, Any] = {}
    extra: dict[str, float] = {}
    for name, value in reported.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if name in _METRIC_FIELDS:
            if name in ("epoch", "step"):
                if isinstance(value, int) or float(value).is_integer():
                    known[name] = int(value)
            else:
                known[name] = float(value)
        elif 0 < len(name) <= 64 and len(extra) < MAX_METRIC_FIELDS:
            extra[name] = float(value)
    return Metrics(**known, extra=extra) if known or extra else None


_METRIC_FIELDS = frozenset(field.name for field in attrs.fields(Metrics)) - {"extra"}

_SHUTDOWN_ERROR = JobError(
    "WORKER_SHUTDOWN", "the worker shut down before the job finished", recoverable=True
)
