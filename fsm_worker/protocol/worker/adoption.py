"""What a restored core does with the runs it held: adopt them, or end them (pure; used on `Restored`).

The decision the worker host used to take itself after a journal restore: a run in `starting`/`running`, or
being stopped, lived in the old process. With detached runs it may still be going: `AdoptRun` (and stop it
again if it was being stopped). Without, it is gone: the running ones fail `KILLED` (recoverable) and the
stopping ones end as stopped, each through the table's own run-event rows, reported once.
"""

from __future__ import annotations

from collections.abc import Iterable

from fsm_worker.protocol.errors import AppErrorCode
from fsm_worker.protocol.worker.events import Restored, RunFailed, RunStopped
from fsm_worker.protocol.worker.instructions import AdoptRun
from fsm_worker.protocol.worker.states import Job, WorkerState

__all__ = ["KILLED_MESSAGE", "RUN_STATES", "STOPPING_STATES", "after_restore"]

#: States whose run a restarted worker must find again (or report gone).
RUN_STATES = frozenset({WorkerState.STARTING, WorkerState.RUNNING})
STOPPING_STATES = frozenset(
    {WorkerState.STOPPING_FOR_CANCEL, WorkerState.STOPPING_FOR_SHUTDOWN, WorkerState.STOPPING_EARLY}
)
KILLED_MESSAGE = "the worker restarted and the job's process did not survive it"


def after_restore(
    event: Restored, held: Iterable[tuple[Job, WorkerState]]
) -> list[AdoptRun | RunFailed | RunStopped]:
    """Per held job with a run, in order: the instruction to adopt it, or the run event that ends it."""
    steps: list[AdoptRun | RunFailed | RunStopped] = []
    for job, state in held:
        if state not in RUN_STATES | STOPPING_STATES:
            continue
        if event.runs_survive:
            stop = None if state in RUN_STATES else state is WorkerState.STOPPING_EARLY
            steps.append(AdoptRun(job, event.resume_offsets.get(job.job_id, 0), stop))
        elif state in RUN_STATES:
            steps.append(RunFailed(job.job_id, AppErrorCode.KILLED, KILLED_MESSAGE, recoverable=True))
        else:
            steps.append(RunStopped(job.job_id))
    return steps
