"""The core's state values: a job's status and state, the worker's intake, and the jobs it holds."""

from __future__ import annotations

import enum
from typing import Any

import attrs

from fsm_worker.protocol.messages import JobRequest


class WorkerStatus(enum.Enum):
    """The status of a job's slot(s), and the worker's advertised status derived from its slots (issue 12).

    `queued` is only ever a job's (waiting for a slot); a worker advertises `available`, `reserved` or `busy`.
    """

    AVAILABLE = "available"
    RESERVED = "reserved"
    BUSY = "busy"
    QUEUED = "queued"


class WorkerState(enum.Enum):
    """The states of one job's machine: a status, and below `busy` the run's sub-state (`.` nests).

    `busy.stopping.*` carries the stop reason: the client's cancel, the worker's shutdown, or the client's
    soft stop (`job_stop`), which keeps the outputs. `queued` is a job accepted into the worker's queue
    (no slot yet); `queued.assigned` one its client has assigned (it may upload its inputs while it waits).
    `available` is a machine that holds no job.
    """

    AVAILABLE = "available"
    RESERVED = "reserved"
    QUEUED = "queued"
    QUEUED_ASSIGNED = "queued.assigned"
    AWAITING_INPUTS = "busy.awaiting_inputs"
    STARTING = "busy.starting"
    RUNNING = "busy.running"
    STOPPING_FOR_CANCEL = "busy.stopping.cancel"
    STOPPING_FOR_SHUTDOWN = "busy.stopping.shutdown"
    STOPPING_EARLY = "busy.stopping.early"

    @property
    def status(self) -> WorkerStatus:
        """The advertised status this state belongs to."""
        return _STATUS_OF[self]


class Intake(enum.Enum):
    """Whether the worker takes new jobs: the states of the coordinator's second table.

    A drain (`Drain`) waits for the jobs held to end (`draining`); past `shutdown_timeout` it stops them
    (`draining.overdue`); it is `drained` (`Drained` emitted, once) when nothing is held, or when the jobs
    stopped still have not ended `kill_grace` + `DRAIN_MARGIN` seconds later.
    """

    OPEN = "open"
    DRAINING = "draining"
    OVERDUE = "draining.overdue"
    DRAINED = "drained"


_STATUS_OF = {state: WorkerStatus(state.value.split(".", 1)[0]) for state in WorkerState}


@attrs.frozen
class Job:
    """An assigned job, as the worker holds it while busy."""

    job_id: str
    client_id: str
    request: JobRequest
    assigned_at: float
    estimated_duration_minutes: float

    @property
    def job_type(self) -> str:
        return self.request.job_type

    @property
    def config(self) -> dict[str, Any]:
        return self.request.config


@attrs.frozen
class Reservation:
    """A job the worker accepted and holds for its client until `deadline`."""

    job_id: str
    client_id: str
    request: JobRequest
    estimated_duration_minutes: float
    deadline: float
