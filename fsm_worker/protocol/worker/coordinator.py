"""The job coordinator: the worker's side of the job protocol as one explicit, sans-IO state machine.

`table.TRANSITIONS` is the whole protocol; this module routes each event to its job's machine, `guards.py`
holds its guards, `actions.py` and `placement.py` its actions. `JobCoordinator.handle(event, now)` is the only
entry point: it takes one event and the current time and returns the instructions for the shells, in the order
they must be carried out. It does no IO and never sleeps; deadlines are data (`next_deadline()`), and the shell
feeds `TimerFired` when its single timer goes off.

Issue 12: each job the worker holds has its own machine on the one table (a `JobRecord`: its state and data).
The coordinator's `state`, `reservation`, `current_job`, … are those of the focused record: `_trigger` focuses
the job's record, fires the trigger on it (the `transitions` machine's rows, tried by `dispatch.Rows`: the
guards and actions are this object's methods, the state is the record's), then settles the slots and the queue
(a freed slot goes to the queue's head: `slot_granted`; the others hear their new place: `queue_moved`) and
publishes the slots when they changed. Outside `handle` the focus is the primary job (the first in a slot).
"""

from __future__ import annotations

import collections
import logging
import operator
from collections.abc import Callable

import attrs
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
from fsm_worker.protocol.worker.actions import CoordinatorConfig, Retained, Stimulus
from fsm_worker.protocol.worker.adoption import after_restore
from fsm_worker.protocol.worker.capabilities import WorkerCapabilities, estimate_duration_minutes
from fsm_worker.protocol.worker.dispatch import Rows
from fsm_worker.protocol.worker.drain import DrainActions
from fsm_worker.protocol.worker.events import (
    ChannelAnswered,
    ChannelClosed,
    ChannelFailed,
    ChannelOpened,
    Drain,
    Event,
    InputsReady,
    InputsStarted,
    JobFilesRemoved,
    PeerMessage,
    Restored,
    RunFailed,
    RunProgress,
    RunStarted,
    RunStopped,
    RunSucceeded,
    Started,
    TimerFired,
)
from fsm_worker.protocol.worker.guards import CoordinatorGuards
from fsm_worker.protocol.worker.hold_events import HoldGranted, HoldRefused, HoldsOffered, HoldUnanswered
from fsm_worker.protocol.worker.holds import HoldActions
from fsm_worker.protocol.worker.instructions import AdoptRun, Advertise, Instruction, SlotsView
from fsm_worker.protocol.worker.invariants import QUEUED, check_invariants
from fsm_worker.protocol.worker.job_queue import JobQueue
from fsm_worker.protocol.worker.placement import JobRecord
from fsm_worker.protocol.worker.scheduler import Scheduler
from fsm_worker.protocol.worker.slots import Slot, SlotState, SlotTable
from fsm_worker.protocol.worker.states import Intake, Job, Reservation, WorkerState, WorkerStatus
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
    Started: "started",
    HoldsOffered: "holds_offered",
}
_WORKER_BOUND = JobRequest | JobAssignment | JobCancel | JobStop | RtcOffer | JobSync
_NOT_IN_SLOT = frozenset((WorkerState.AVAILABLE, *QUEUED))


def _record_property(name: str) -> property:
    """An attribute of the focused job's record, read and written through the coordinator (read by a C getter:
    the actions read these on every event)."""

    def put(self: JobCoordinator, value: object) -> None:
        setattr(self._focus, name, value)

    return property(operator.attrgetter(f"_focus.{name}"), put)


class JobCoordinator(CoordinatorGuards, HoldActions, DrainActions):
    """The worker's protocol state: its jobs (each a machine on the table), slots, queue, retained results.

    `state` (moved by the table's rows) is the focused job's `WorkerState`; `status` is the worker's advertised
    status, derived from its slots. No IO.
    """

    state: WorkerState = _record_property("state")  # type: ignore[assignment]
    reservation: Reservation | None = _record_property("reservation")  # type: ignore[assignment]
    current_job: Job | None = _record_property("current_job")  # type: ignore[assignment]
    _history: list[JobEvent] = _record_property("history")  # type: ignore[assignment]
    first_input_seen: bool = _record_property("first_input_seen")  # type: ignore[assignment]
    _started_at: float = _record_property("started_at")  # type: ignore[assignment]

    def __init__(
        self,
        capabilities: WorkerCapabilities,
        config: CoordinatorConfig | None = None,
        estimator: Callable[[JobRequest], float] | None = None,
        check_config: Callable[[JobRequest], list[str]] | None = None,
        slots: tuple[Slot, ...] | None = None,
    ) -> None:
        """`estimator` gives a job's duration in minutes; `check_config` lists what is wrong with its config;
        `slots`: the worker's slots (default: one CPU slot)."""
        self.capabilities = capabilities
        self.config = config or CoordinatorConfig()
        self._estimate = estimator or (lambda request: estimate_duration_minutes(request.config))
        self._check_config = check_config or (lambda request: [])
        table = SlotTable.of(slots or (Slot(0, (), capabilities.gpu_memory_mb),))
        queue = JobQueue(
            self.config.queue_size, self.config.max_jobs_per_client, self.config.queue_bypass_limit
        )
        self.sched = Scheduler(table, queue)
        self._jobs: dict[str, JobRecord] = {}  # every job held: reserved, queued or in a slot
        self._focus = JobRecord()
        self.intake = Intake.OPEN
        self._retained: dict[str, Retained] = {}
        self._offers: dict[str, str] = {}  # job id → the SDP of the offer its channel answers
        self._out: list[Instruction] = []
        self._init_holds()
        self._mark = 0  # where the current trigger's instructions begin in `_out`
        self._advertised = self.view()
        self._advertised_sched = self.sched  # the scheduler `_advertised` was derived from
        #: The latest events with the state before and after each: explains how the core got where it is.
        self.stimulus_log: collections.deque[tuple[float, Event, WorkerState, WorkerState]] = (
            collections.deque(maxlen=self.config.stimulus_log_size)
        )
        #: The table as a `transitions` machine (no model: each job's record is moved by `_rows`, its rows bound).
        self.machine = Machine(None, WorkerState, initial=WorkerState.AVAILABLE, transitions=TRANSITIONS,
                               auto_transitions=False)  # fmt: skip
        self._rows: Rows[WorkerState, Stimulus] = Rows.of(self.machine, self)
        #: The second table (`INTAKE`); it drives `intake` through `_trigger` and binds nothing to the model.
        self.intake_machine = Machine(None, Intake, initial=Intake.OPEN, transitions=INTAKE,
                                      auto_transitions=False, model_attribute="intake")  # fmt: skip

    # --- the one entry point ----------------------------------------------------------------------------------

    @property
    def pending_job_id(self) -> str | None:
        return self.reservation.job_id if self.reservation else None

    @property
    def status(self) -> WorkerStatus:
        """The advertised status, derived from the slots and the queue (`Scheduler.status`)."""
        return WorkerStatus(self.sched.status())

    def handle(self, event: Event, now: float) -> list[Instruction]:
        """Apply one event at time `now`; return the instructions for the shells, in order."""
        self._out = []
        self._fire_due_deadlines(now)
        before = self._focus.state
        if isinstance(event, PeerMessage):
            self._on_peer_message(event, now)
        elif isinstance(event, Drain):
            self._drain(Stimulus(now, event))
        elif isinstance(event, HoldGranted | HoldRefused | HoldUnanswered):  # unanswered: taken as granted
            name = "hold_refused" if isinstance(event, HoldRefused) else "hold_granted"
            self._trigger(name, self._hold_stimulus(event, now))
        elif not isinstance(event, TimerFired):  # deadlines were fired above
            if isinstance(event, Started):  # intake first: a new process takes jobs again
                self._intake_trigger("started", Stimulus(now, event))
            self._trigger(_TRIGGERS[type(event)], Stimulus(now, event, job_id=getattr(event, "job_id", None)))
            if isinstance(event, Restored):
                self._after_restore(event, now)
        if self.intake is not Intake.OPEN:  # draining: `Drained` once nothing is held (the intake table)
            self._intake_trigger("drain_settled", Stimulus(now, event))
        self._focus = focus = self._primary()
        self.stimulus_log.append((now, event, before, focus.state))
        return self._out

    def _after_restore(self, event: Restored, now: float) -> None:
        """Adopt the runs held (`AdoptRun`), or end them through their run-event rows (adoption.py)."""
        self._drop_claims(Stimulus(now, event), "busy", "the worker restarted before the hold was answered")
        for step in after_restore(event, self.held_jobs()):
            if isinstance(step, AdoptRun):
                self._out.append(step)
            else:
                self._trigger(_TRIGGERS[type(step)], Stimulus(now, step, job_id=step.job_id))

    def next_deadline(self) -> float | None:
        """The earliest time at which `TimerFired` has work to do, or None."""
        deadlines = [next(iter(self._retained.values())).expires_at] if self._retained else []
        for record in self._jobs.values():
            deadlines += self._deadlines(record)
        queued = self.sched.queue.next_deadline(self.config.queue_lease)
        drain = self.drain_deadline
        return min([*deadlines, *(t for t in (queued, drain) if t is not None)], default=None)

    def at_rest(self) -> bool:
        """Nothing here depends on what was handled before: no job held or retained, no queue, not draining."""
        return not (self._jobs or self._retained or self.sched.queue.length or self.draining or self._claims)

    def _deadlines(self, record: JobRecord) -> list[float]:
        if record.state is WorkerState.RESERVED and record.reservation is not None:
            return [record.reservation.deadline]
        job = record.current_job
        if job is None or record.state is not WorkerState.AWAITING_INPUTS:
            return []
        first = [] if record.first_input_seen else [job.assigned_at + self.config.first_input_timeout]
        return [job.assigned_at + self.config.input_timeout, *first]

    def job_state(self, job_id: str) -> WorkerState:
        """One job's state (`available`: not held here)."""
        record = self._jobs.get(job_id)
        return record.state if record is not None else WorkerState.AVAILABLE

    def view(self) -> SlotsView:
        """The slots and the queue as published (no job ids)."""
        table = self.sched.slots
        slots = tuple((slot.index, slot.gpus, slot.memory_mb, state)
                      for slot, state in zip(table.slots, self.sched.slot_states(), strict=True))  # fmt: skip
        busy = {h.job_id for h in table.holders if h is not None and h.state is SlotState.BUSY}
        return SlotsView(slots, self.sched.queue.length, self.sched.queue.capacity, len(busy))

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

    def _record(self, job_id: str | None) -> JobRecord:
        """The job's own machine, or a fresh one that holds nothing."""
        held = self._jobs.get(job_id) if job_id is not None else None
        return held if held is not None else JobRecord(job_id)

    def _primary(self) -> JobRecord:
        """The job `state`, `current_job`, … show outside `handle`: the first in a slot, else the first held."""
        for holder in self.sched.slots.holders:
            if holder is not None and holder.job_id in self._jobs:
                return self._jobs[holder.job_id]
        return next(iter(self._jobs.values()), None) or JobRecord()

    def _trigger(self, name: str, stimulus: Stimulus, record: JobRecord | None = None) -> None:
        record = record if record is not None else self._record(stimulus.job_id)
        self._focus, self._mark, before = record, len(self._out), record.state
        self._rows.fire(name, record, stimulus)
        if record.state is not before:  # the slots and the queue change only with a job's state
            self._settle(record, stimulus.now, self._mark)

    def _settle(self, record: JobRecord, now: float, mark: int) -> None:
        """After one job's trigger: keep its slots in step with its state, publish the slots when they changed
        (before the messages of this trigger), give freed slots to the queue and tell the queue its places."""
        job_id, state, granted = record.job_id, record.state, tuple[str, ...]()
        if job_id is not None and state is WorkerState.AVAILABLE:
            if self._jobs.pop(job_id, None) is not None:
                self.sched, granted = self.sched.release(job_id, now, grant=not self.draining)
                self._release_hold(record)
        elif job_id is not None:
            self._jobs.setdefault(job_id, record)
            wanted = SlotState.RESERVED if state is WorkerState.RESERVED else SlotState.BUSY
            for holder in self.sched.slots.holders:
                if holder is not None and holder.job_id == job_id and holder.state is not wanted:
                    self.sched = attrs.evolve(self.sched, slots=self.sched.slots.mark(job_id, wanted))
                    break
        # the view is derived from the (immutable) scheduler alone: unchanged scheduler, unchanged view
        view = self._advertised if self.sched is self._advertised_sched else self.view()
        self._advertised_sched = self.sched
        if view != self._advertised:
            self._advertised = view
            in_slot = state not in _NOT_IN_SLOT
            self._out.insert(mark, Advertise(self.status, job_id if in_slot else None, view))
        for started in granted:
            self._trigger("slot_granted", Stimulus(now, job_id=started), self._jobs[started])
        if not self.sched.queue.entries or not (granted or job_id not in self._jobs):
            return  # nobody queued, or nobody's place changed
        for queued, position, _ in self.sched.positions(now):
            if self._jobs[queued].reported_position != position:
                self._trigger("queue_moved", Stimulus(now, job_id=queued), self._jobs[queued])

    def _drain(self, stimulus: Stimulus) -> None:
        """A `Drain`: the intake table, then claims still waiting for the server are answered, then each held
        job's `drain` rows."""
        self._intake_trigger("drain", stimulus)
        self._drop_claims(stimulus, "draining", "the worker is shutting down")
        self._drain_jobs(stimulus)

    def _fire_due_deadlines(self, now: float) -> None:
        for record in list(self._jobs.values()) if self._jobs else ():
            if record.job_id not in self._jobs:
                continue  # let go by an earlier deadline of this turn
            job = record.current_job
            if record.state is WorkerState.RESERVED and record.reservation is not None:
                if now >= record.reservation.deadline:
                    self._trigger("lease_expired", Stimulus(now, job_id=record.job_id), record)
            elif record.state is WorkerState.AWAITING_INPUTS and job is not None:
                if not record.first_input_seen and now >= job.assigned_at + self.config.first_input_timeout:
                    self._trigger("first_input_overdue", Stimulus(now, job_id=job.job_id), record)
                elif now >= job.assigned_at + self.config.input_timeout:
                    self._trigger("inputs_overdue", Stimulus(now, job_id=job.job_id), record)
        for job_id in (
            self.sched.queue.expired(now, self.config.queue_lease) if self.sched.queue.entries else ()
        ):
            if job_id in self._jobs:
                self._trigger("queue_lease_expired", Stimulus(now, job_id=job_id), self._jobs[job_id])
        while self._retained:  # kept in order of expiry: retention is one constant and time only moves on
            job_id, retained = next(iter(self._retained.items()))
            if now < retained.expires_at:
                break
            del self._retained[job_id]
            if retained.files_kept:
                self._forget_files(job_id)
        if self.drain_deadline is not None and now >= self.drain_deadline:
            self._intake_trigger("drain_overdue", Stimulus(now))

    # --- invariants (checked by the tests after every step) ---------------------------------------------------

    def validate_state(self, now: float) -> None:
        """Raise AssertionError when the core's data contradicts its state (`invariants.py`)."""
        check_invariants(self, now)
