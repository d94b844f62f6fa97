"""The drain (graceful shutdown) in the core: the intake table's actions and the drain rows' actions.

A `Drain` closes the intake (`table.INTAKE`) and drives every job held through its `drain` rows: reservations
and queued jobs are released, jobs without a run fail, runs finish (or are stopped: `cancel_running`, or the
core's `shutdown_policy`). The drain's deadline is data: at `shutdown_timeout` the runs left are stopped, and
`kill_grace` + `DRAIN_MARGIN` later the core stops waiting for them. `Drained` is emitted exactly once: when
nothing is held any more (checked after every event while draining), or, with a reason, at that last bound.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs

from fsm_worker.protocol.messages import JobError, JobFailed, ReservationExpired
from fsm_worker.protocol.worker.actions import CoordinatorActions
from fsm_worker.protocol.worker.events import Drain
from fsm_worker.protocol.worker.instructions import Drained, StopRun
from fsm_worker.protocol.worker.placement import JobRecord
from fsm_worker.protocol.worker.states import Intake, WorkerState
from fsm_worker.protocol.worker.values import DRAIN_MARGIN, Stimulus

if TYPE_CHECKING:
    from transitions import Machine

log = logging.getLogger("fsm_worker.protocol.worker.coordinator")

#: The order a drain releases jobs in: queued ones first (no freed slot may go to a queued job).
_DRAIN_ORDER = {WorkerState.QUEUED: 0, WorkerState.QUEUED_ASSIGNED: 0, WorkerState.RESERVED: 1}
SHUTDOWN_ERROR = JobError("WORKER_SHUTDOWN", "the worker shut down before the job finished", recoverable=True)


class DrainActions(CoordinatorActions):
    """The drain's guards and actions; `JobCoordinator` supplies the jobs, the trigger and the intake machine."""

    intake_machine: Machine
    #: When the drain next moves on by itself (`drain_overdue`); None: not draining, or drained.
    drain_deadline: float | None = None

    def _trigger(self, name: str, stimulus: Stimulus, record: JobRecord | None = None) -> None:
        raise NotImplementedError  # JobCoordinator's

    @property
    def draining(self) -> bool:
        return self.intake is not Intake.OPEN

    # --- entry points (from `JobCoordinator.handle`) ------------------------------------------------------------

    def _drain(self, stimulus: Stimulus) -> None:
        """A `Drain`: through the intake table first, then through each held job's `drain` rows."""
        self._intake_trigger("drain", stimulus)
        self._drain_jobs(stimulus)

    def _drain_jobs(self, stimulus: Stimulus) -> None:
        held = sorted(self._jobs.values(), key=lambda r: _DRAIN_ORDER.get(r.state, 2))
        for record in held or [JobRecord()]:
            self._trigger("drain", attrs.evolve(stimulus, job_id=record.job_id), record)

    def _intake_trigger(self, name: str, stimulus: Stimulus) -> None:
        self._focus, self._mark = JobRecord(), len(self._out)
        self.intake_machine.events[name].trigger(self, stimulus)

    # --- guards -------------------------------------------------------------------------------------------------

    def is_draining(self, s: Stimulus) -> bool:
        return self.draining

    def holds_nothing(self, s: Stimulus) -> bool:
        return not self._jobs

    def cancel_running(self, s: Stimulus) -> bool:
        assert isinstance(s.event, Drain)
        wanted = s.event.cancel_running
        return self.config.shutdown_policy == "cancel" if wanted is None else wanted

    # --- actions: the intake table ------------------------------------------------------------------------------

    def start_draining(self, s: Stimulus) -> None:
        log.info("draining: no new jobs")
        self.drain_deadline = s.now + self.config.shutdown_timeout

    def already_draining(self, s: Stimulus) -> None:
        log.debug("drain: already draining")

    def already_drained(self, s: Stimulus) -> None:
        log.debug("drain: already drained")

    def keep_draining(self, s: Stimulus) -> None:
        pass  # jobs are still held: `Drained` waits for them (or for the deadline)

    def already_open(self, s: Stimulus) -> None:
        pass  # the usual start: nothing was being drained

    def reopen_intake(self, s: Stimulus) -> None:
        log.warning("the journal's worker was stopped while draining; this process takes jobs again")
        self.drain_deadline = None

    def report_drained(self, s: Stimulus) -> None:
        self.drain_deadline = None
        self._out.append(Drained())

    def stop_what_is_left(self, s: Stimulus) -> None:
        timeout, grace = self.config.shutdown_timeout, self.config.kill_grace + DRAIN_MARGIN
        log.error("the current job did not end within %.0f s; stopping it", timeout)
        self.drain_deadline = s.now + grace
        self._drain_jobs(Stimulus(s.now, Drain(cancel_running=True)))

    def give_up_waiting(self, s: Stimulus) -> None:
        self.drain_deadline = None
        held = ", ".join(f"{r.job_id} ({r.state.value})" for r in self._jobs.values())
        wait = self.config.kill_grace + DRAIN_MARGIN
        self._out.append(Drained(f"stopped {wait:g} s ago and still not ended: {held or 'nothing'}"))

    # --- actions: the jobs' `drain` rows ------------------------------------------------------------------------

    def release_reservation(self, s: Stimulus) -> None:
        held = self._take_reservation()
        log.info("released the reservation of job %s: shutting down", held.job_id)
        self._send(held.client_id, ReservationExpired(held.job_id))

    def stop_for_shutdown(self, s: Stimulus) -> None:
        assert self.current_job is not None
        self._out.append(StopRun(self.current_job.job_id, graceful=False))

    def stop_now(self, s: Stimulus) -> None:
        assert self.current_job is not None
        log.info("job %s: shutting down, its early stop becomes immediate", self.current_job.job_id)
        self._out.append(StopRun(self.current_job.job_id, graceful=False))

    def fail_for_shutdown(self, s: Stimulus) -> None:
        self._finish_job(s, lambda seq, job_id: JobFailed(job_id, SHUTDOWN_ERROR, seq), keep_files=False)

    def fail_stopped_for_shutdown(self, s: Stimulus) -> None:
        self._finish_job(s, lambda seq, job_id: JobFailed(job_id, SHUTDOWN_ERROR, seq), keep_files=True)

    def wait_for_run(self, s: Stimulus) -> None:
        assert self.current_job is not None
        log.warning(
            "shutting down: waiting for job %s to finish (again to stop it now)", self.current_job.job_id
        )

    def nothing_to_release(self, s: Stimulus) -> None:
        log.debug("drain: nothing held to release or stop")
