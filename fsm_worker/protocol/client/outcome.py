"""How a client's job ended, from its terminal event and the core's state."""

from __future__ import annotations

from fsm_worker.protocol.client.events import ClientJobState, Outcome
from fsm_worker.protocol.client.table import ABANDONED, FAILED
from fsm_worker.protocol.messages import JobCancelled, JobComplete, JobEvent, JobFailed


def outcome_of(terminal: JobEvent | None, state: ClientJobState) -> Outcome:
    """The worker's terminal event decides; without one a failed core lost the job (PENDING while it runs)."""
    match terminal:
        case JobComplete(stopped_early=True):
            return Outcome.STOPPED_EARLY
        case JobComplete():
            return Outcome.COMPLETED
        case JobFailed():
            return Outcome.FAILED
        case JobCancelled():
            return Outcome.CANCELLED
    return {FAILED: Outcome.LOST, ABANDONED: Outcome.ABANDONED}.get(state, Outcome.PENDING)
