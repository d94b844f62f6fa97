"""The job coordinator: the worker's side of the job protocol as one explicit, sans-IO state machine.

`table.TRANSITIONS` is the whole protocol; this module holds its guards and invariants, `actions.py` its
actions. `JobCoordinator.handle(event, now)` is the only entry point: it takes one event and the current time and returns the instructions for
the shells, in the order they must be carried out. It does no IO and never sleeps; deadlines are data
(`next_deadline()`), and the shell feeds `TimerFired` when its single timer goes off.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

from transitions import Machine

from fsm_worker.protocol.errors import MessageError
from fsm_worker.protocol.messages import (
    AppError,
    JobAssignment,
    JobCancel,
    JobEvent,
    JobRequest,
    JobStop,
    JobSync,
    RtcOffer,
    UnknownMessage,
    parse_message,
)
from fsm_worker.protocol.worker.actions import (
    CoordinatorActions,
    CoordinatorConfig,
    Retained,
    Stimulus,
    presents_key,
)
from fsm_worker.protocol.worker.capabilities import WorkerCapabilities, estimate_duration_minutes
from fsm_worker.protocol.worker.events import (
    ChannelAnswered,
    ChannelClosed,
    ChannelFailed,
    ChannelOpened,
    Drain,
    Event,
    InputsReady,
    InputsStarted,
    Instruction,
    Intake,
    Job,
    JobFilesRemoved,
    PeerMessage,
    Reservation,
    Restored,
    RunFailed,
    RunProgress,
    RunStarted,
    RunStopped,
    RunSucceeded,
    TimerFired,
    WorkerState,
    WorkerStatus,
)
from fsm_worker.protocol.worker.table import ANY, INTAKE, STAY, TIMED_TRIGGERS, TRANSITIONS

log = logging.getLogger(__name__)

__all__ = [
    "ANY",
    "INTAKE",
    "STAY",
    "TIMED_TRIGGERS",
    "TRANSITIONS",
    "CoordinatorConfig",
    "JobCoordinator",
    "Stimulus",
]

#: The triggers of the events that are not peer messages.
_TRIGGERS: dict[type, str] = {
    InputsStarted: "inputs_started",
    InputsReady: "inputs_ready",
    RunStarted: "run_started",
    RunProgress: "run_progress",
    RunSucceeded: "run_succeeded",
    RunFailed: "run_failed",
    RunStopped: "run_stopped",
    ChannelAnswered: "channel_answered",
    ChannelOpened: "channel_opened",
    ChannelFailed: "channel_failed",
    ChannelClosed: "channel_closed",
    JobFilesRemoved: "job_files_removed",
    Restored: "restored",
    Drain: "drain",
}
_WORKER_BOUND = JobRequest | JobAssignment | JobCancel | JobStop | RtcOffer | JobSync


class JobCoordinator(CoordinatorActions):
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
        self.intake = Intake.OPEN
        self._started_at = 0.0
        self._history: list[JobEvent] = []
        self.first_input_seen = False
        self._retained: dict[str, Retained] = {}
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
        #: The second table (`INTAKE`); it drives `intake` through `_trigger` and binds nothing to the model.
        self.intake_machine = Machine(
            model=None,
            states=Intake,
            initial=Intake.OPEN,
            transitions=INTAKE,
            auto_transitions=False,
            model_attribute="intake",
        )

    # --- the one entry point ----------------------------------------------------------------------------------

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
            if not self.first_input_seen:
                deadlines.append(self.current_job.assigned_at + self.config.first_input_timeout)
        return min(deadlines, default=None)

    def retained_job_ids(self) -> list[str]:
        """Finished jobs whose files are kept for their clients (for tests and diagnostics)."""
        return [job_id for job_id, retained in self._retained.items() if retained.files_kept]

    # --- routing ----------------------------------------------------------------------------------------------

    def _on_peer_message(self, event: PeerMessage, now: float) -> None:
        sender, payload = event.sender, event.payload
        try:
            message = parse_message(payload)
        except MessageError as error:
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
        if name in self.intake_machine.events:
            self.intake_machine.events[name].trigger(self, stimulus)
        self.machine.events[name].trigger(self, stimulus)

    @property
    def draining(self) -> bool:
        return self.intake is Intake.DRAINING

    def _fire_due_deadlines(self, now: float) -> None:
        if self.reservation is not None and now >= self.reservation.deadline:
            self._trigger("lease_expired", Stimulus(now, job_id=self.reservation.job_id))
        job = self.current_job
        awaiting = job is not None and self.state is WorkerState.AWAITING_INPUTS
        first_due = (
            job is not None
            and not self.first_input_seen
            and now >= job.assigned_at + self.config.first_input_timeout
        )
        if job is not None and awaiting and first_due:
            self._trigger("first_input_overdue", Stimulus(now, job_id=job.job_id))
        elif job is not None and awaiting and now >= job.assigned_at + self.config.input_timeout:
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
        return (
            held is not None
            and (held.job_id, held.client_id) == (s.job_id, s.sender)
            # Releasing a reservation needs no key: a client cancels its losing bids without telling the losers
            # the key (only assigning, which hands the job over, must present it).
            and (isinstance(s.message, JobCancel) or presents_key(held.request.job_key_sha256, s))
        )

    def for_retained_job(self, s: Stimulus) -> bool:
        retained = self._retained.get(s.job_id or "")
        return (
            retained is not None
            and retained.files_kept
            and retained.client_id == s.sender
            and presents_key(retained.key_sha256, s)
        )

    def for_known_job(self, s: Stimulus) -> bool:
        retained = self._retained.get(s.job_id or "")
        return self.for_current_job(s) or (
            retained is not None and retained.client_id == s.sender and presents_key(retained.key_sha256, s)
        )

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
