"""The worker core's invariants, checked by the tests after every step (DESIGN.md: Dask's `validate_state`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fsm_worker.protocol.worker.slots import SlotState
from fsm_worker.protocol.worker.states import Intake, WorkerState

if TYPE_CHECKING:
    from fsm_worker.protocol.worker.coordinator import JobCoordinator

QUEUED = (WorkerState.QUEUED, WorkerState.QUEUED_ASSIGNED)


def check_invariants(core: JobCoordinator, now: float) -> None:
    """Raise AssertionError when the core's data contradicts its state: per job, per slot, the queue."""
    table, queue = core.sched.slots, core.sched.queue
    queued = [entry.job_id for entry in queue.entries]
    assert not core._claims.keys() & core._jobs.keys(), "a job waits for its hold or is held, not both"
    for job_id, record in core._jobs.items():
        state, held = record.state, record.reservation or record.current_job
        assert record.job_id == job_id and held is not None and held.job_id == job_id, "a record per job"
        assert state is not WorkerState.AVAILABLE, "a held job has a state"
        assert (record.reservation is not None) == (state in (WorkerState.RESERVED, WorkerState.QUEUED))
        assert (job_id in queued) == (state in QUEUED), "queued ⇔ in the queue"
        assert bool(table.slots_of(job_id)) == (state not in QUEUED), "in a slot ⇔ not queued"
        if record.reservation is not None:
            assert record.reservation.deadline > now, "a held reservation has a future deadline"
        assert job_id not in core._retained, "a held job is not also retained"
        if state is WorkerState.AWAITING_INPUTS:
            assert record.current_job is not None
            assert now < record.current_job.assigned_at + core.config.input_timeout, "inputs not overdue"
    holders = [h.job_id for h in table.holders if h is not None]
    assert set(holders) == {j for j, r in core._jobs.items() if r.state not in QUEUED}, "slots ⇔ jobs"
    for holder in table.holders:
        if holder is not None:
            in_slot = core._jobs[holder.job_id].state
            assert (holder.state is SlotState.RESERVED) == (in_slot is WorkerState.RESERVED), "slot state"
    gpus = [gpu for job_id in set(holders) for slot in table.slots_of(job_id) for gpu in slot.gpus]
    assert len(gpus) == len(set(gpus)), "a GPU is never in two jobs"
    assert len(queued) <= queue.capacity, "the queue holds at most queue_size jobs"
    assert core._advertised == core.view(), "what is published is the slots' state"
    assert set(core._offers) <= {*core._retained, *core._jobs}, "offers only for jobs held here"
    if core.draining:
        assert not queued and all(r.state is not WorkerState.RESERVED for r in core._jobs.values()), (
            "a draining worker holds no reservation and no queue"
        )
    waiting = core.intake in (Intake.DRAINING, Intake.OVERDUE)
    assert (core.drain_deadline is not None) == waiting, "a drain that waits has its deadline, no other"
    expiries = [retained.expires_at for retained in core._retained.values()]
    assert expiries == sorted(expiries) and all(t > now for t in expiries), "retention in order, future"
