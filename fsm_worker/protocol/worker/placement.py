"""Slots and the queue in the table (issue 12): one job's record, and the guards and actions about placement.

Every job the worker holds has a `JobRecord`: its own state in the table, its reservation or assigned job,
its events, its deadlines' data. `SlotActions` is the part of `JobCoordinator` whose guards ask the
`Scheduler` (slots + FIFO queue, `scheduler.py`) and whose actions place, queue and report a job.
"""

from __future__ import annotations

import logging
import math

import attrs

from fsm_worker.protocol.errors import AppErrorCode
from fsm_worker.protocol.messages import JobError, JobEvent, JobFailed, JobRequest, JobResponse, JobStatus
from fsm_worker.protocol.worker.actions import CoordinatorActions, Stimulus
from fsm_worker.protocol.worker.scheduler import Scheduler
from fsm_worker.protocol.worker.states import Job, Reservation, WorkerState

log = logging.getLogger("fsm_worker.protocol.worker.coordinator")


@attrs.define(eq=False)
class JobRecord:
    """One job's machine: its state in the table and what its rows read and change. `job_id` None: a
    machine that holds nothing (the events about no known job run on a fresh one)."""

    job_id: str | None = None
    state: WorkerState = WorkerState.AVAILABLE
    reservation: Reservation | None = None
    current_job: Job | None = None
    history: list[JobEvent] = attrs.field(factory=list)
    first_input_seen: bool = False
    #: The client committed the inputs while the job was queued: it starts as soon as it has a slot.
    committed: bool = False
    started_at: float = 0.0
    #: The queue position last told to the client (`job_response` or `job_status queued`).
    reported_position: int | None = None
    #: The client the server counts this job's room hold for (holds.py); None: no hold claimed.
    hold_client: str | None = None


class SlotActions(CoordinatorActions):
    """Guards and actions of the rows about slots and the queue."""

    sched: Scheduler
    _focus: JobRecord

    # --- guards -----------------------------------------------------------------------------------------------

    def slot_free(self, s: Stimulus) -> bool:
        """The request's slots are free now, and no queued job holds them (`Scheduler.may_place`)."""
        assert isinstance(s.message, JobRequest)
        wanted = s.message.requirements
        return self.sched.may_place(wanted.gpus, wanted.min_gpu_memory_mb)

    def never_fits(self, s: Stimulus) -> bool:
        """The worker does not have the slots the request asks for, even when all are free."""
        assert isinstance(s.message, JobRequest)
        wanted = s.message.requirements
        return not self.sched.slots.could_ever_fit(wanted.gpus, wanted.min_gpu_memory_mb)

    def wants_queue(self, s: Stimulus) -> bool:
        assert isinstance(s.message, JobRequest)
        return s.message.queue

    def queue_refuses(self, s: Stimulus) -> bool:
        assert s.sender is not None
        return self.sched.queue.refusal(s.sender, 0) is not None

    def inputs_committed(self, s: Stimulus) -> bool:
        return self._focus.committed

    def for_queued_job(self, s: Stimulus) -> bool:
        return self.for_reservation(s) or self.for_current_job(s)

    def for_reservation(self, s: Stimulus) -> bool:
        raise NotImplementedError  # CoordinatorGuards' (guards.py), ahead of this class in JobCoordinator's bases

    # --- actions ----------------------------------------------------------------------------------------------

    def accept_request(self, s: Stimulus) -> None:
        super().accept_request(s)
        assert isinstance(s.message, JobRequest) and s.sender is not None and self.reservation is not None
        self._place(s.message, s.sender, self.reservation.estimated_duration_minutes, s.now)

    def accept_again(self, s: Stimulus) -> None:
        held = self.reservation or self.current_job
        if self.state not in (WorkerState.QUEUED, WorkerState.QUEUED_ASSIGNED) or held is None:
            super().accept_again(s)
            return
        assert s.sender is not None
        position, start = self._position(held.job_id, s.now)
        self._send(s.sender, JobResponse(held.job_id, True, held.estimated_duration_minutes, queued=True,
                                         queue_position=position, estimated_start_seconds=start))  # fmt: skip

    def _place(self, request: JobRequest, client_id: str, minutes: float, now: float) -> None:
        wanted = request.requirements
        placed = self.sched.place(
            request.job_id, client_id, wanted.gpus, minutes, now, wanted.min_gpu_memory_mb
        )
        assert placed is not None, "placed only when `slot_free` held"
        self.sched = placed

    def reject_queue_refusal(self, s: Stimulus) -> None:
        assert s.sender is not None
        refusal = self.sched.queue.refusal(s.sender, 0)
        assert refusal is not None
        detail = f"no free slot, and the queue refuses the job ({refusal.setting})"
        self._reply_rejected(s, refusal.value, [detail])

    def accept_queued(self, s: Stimulus) -> None:
        assert isinstance(s.message, JobRequest) and s.sender is not None
        request = s.message
        estimate = self._estimate(request)
        wanted = request.requirements
        self.sched = self.sched.enqueue(
            request.job_id, s.sender, wanted.gpus, estimate, s.now, wanted.min_gpu_memory_mb
        )
        self.reservation = Reservation(request.job_id, s.sender, request, estimate, math.inf)
        position, start = self._position(request.job_id, s.now)
        self._focus.reported_position = position
        log.info(
            "job %s queued for %s at %d (start in about %.0f s)", request.job_id, s.sender, position, start
        )
        self._send(s.sender, JobResponse(request.job_id, True, estimate, queued=True, queue_position=position,
                                         estimated_start_seconds=start))  # fmt: skip

    def reserve_slot(self, s: Stimulus) -> None:
        """A queued job not yet assigned got its slot: it is reserved as if just requested."""
        held = self.reservation
        assert held is not None
        self.reservation = attrs.evolve(held, deadline=s.now + self.config.reservation_timeout)
        log.info("job %s left the queue: slot reserved for %s", held.job_id, held.client_id)

    def take_slot(self, s: Stimulus) -> None:
        """A queued, assigned job got its slot: its input deadlines start now."""
        job = self.current_job
        assert job is not None
        self.current_job = attrs.evolve(job, assigned_at=s.now)
        log.info("job %s left the queue: awaiting its inputs", job.job_id)

    def note_inputs_committed(self, s: Stimulus) -> None:
        self._focus.committed = True
        log.info("job %s: inputs committed while queued", s.job_id)

    def report_position(self, s: Stimulus) -> None:
        held = self.reservation or self.current_job
        assert held is not None
        position, start = self._position(held.job_id, s.now)
        self._focus.reported_position = position
        self._send(held.client_id, self._queued_status(held.job_id, position, start))

    def keep_queued_alive(self, s: Stimulus) -> None:
        held = self.reservation or self.current_job
        assert held is not None and s.job_id is not None
        self.sched = self.sched.keep_alive(s.job_id, s.now)
        self.replay_events(s)
        self._send(held.client_id, self._queued_status(held.job_id, *self._position(held.job_id, s.now)))

    def expire_queued(self, s: Stimulus) -> None:
        held = self._take_reservation()
        log.info("queued job %s of %s expired: no job_sync for queue_lease", held.job_id, held.client_id)
        self._send(held.client_id, JobFailed(held.job_id, self._lease_error()))

    def fail_queue_lease(self, s: Stimulus) -> None:
        error = self._lease_error()
        self._finish_job(s, lambda seq, job_id: JobFailed(job_id, error, seq), keep_files=False)

    # --- helpers ----------------------------------------------------------------------------------------------

    def _refusals(self, request: JobRequest) -> list[str]:
        reasons = super()._refusals(request)
        wanted, slots = request.requirements, self.sched.slots
        if not slots.could_ever_fit(wanted.gpus, wanted.min_gpu_memory_mb):
            reasons.append(f"needs {wanted.gpus} slots together, this worker has {slots.total}")
        return reasons

    def _devices(self, job_id: str) -> str | None:
        """`CUDA_VISIBLE_DEVICES` of the job's slots; None on a worker whose slots have no GPUs."""
        if not any(slot.gpus for slot in self.sched.slots.slots):
            return None
        return self.sched.slots.cuda_visible_devices(job_id)

    def _lease_error(self) -> JobError:
        text = f"no job_sync kept the queued job alive for queue_lease ({self.config.queue_lease:g} s)"
        return JobError(AppErrorCode.QUEUE_LEASE_EXPIRED.value, text, recoverable=True)

    def _position(self, job_id: str, now: float) -> tuple[int, float]:
        for queued, position, start in self.sched.positions(now):
            if queued == job_id:
                return position, round(start, 3)
        raise AssertionError(f"job {job_id} is not queued")

    @staticmethod
    def _queued_status(job_id: str, position: int, start: float) -> JobStatus:
        text = f"queued: {position} in line"
        return JobStatus(job_id, "queued", 0.0, text, queue_position=position, estimated_start_seconds=start)
