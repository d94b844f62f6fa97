"""What flows into the core (events) and out of it (instructions for the shells).

Events and instructions are small frozen values. The host turns IO into events, feeds them to
`JobCoordinator.handle(event, now)` in arrival order, and carries out the instructions it gets back.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from fsm_worker.protocol.messages import JobError, JobRequest, JobResult, Message


class WorkerStatus(enum.Enum):
    """The worker's advertised status: the states of the coordinator's machine."""

    AVAILABLE = "available"
    RESERVED = "reserved"
    BUSY = "busy"


class RunPhase(enum.Enum):
    """Where the current job's run is, while the worker is busy."""

    AWAITING_INPUTS = "awaiting_inputs"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


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


# --- events (into the core) ----------------------------------------------------------------------------------


@attrs.frozen
class PeerMessage:
    """An application payload from a peer; `sender` is the identity the signaling server bound to it."""

    sender: str
    payload: object


@attrs.frozen
class InputsReady:
    """The job's client finished uploading its inputs: the run may start."""

    job_id: str


@attrs.frozen
class RunStarted:
    job_id: str


@attrs.frozen
class RunProgress:
    job_id: str
    progress: float
    message: str


@attrs.frozen
class RunSucceeded:
    job_id: str
    result: JobResult


@attrs.frozen
class RunFailed:
    job_id: str
    error: JobError


@attrs.frozen
class RunStopped:
    """The run asked to stop by `StopRun` has ended and none of its processes is left."""

    job_id: str


@attrs.frozen
class TimerFired:
    """The shell's single timer went off (the core works out which deadlines passed)."""


@attrs.frozen
class Drain:
    """Stop taking jobs; with `cancel_running`, also stop the current job instead of letting it finish."""

    cancel_running: bool = False


Event = (
    PeerMessage
    | InputsReady
    | RunStarted
    | RunProgress
    | RunSucceeded
    | RunFailed
    | RunStopped
    | TimerFired
    | Drain
)


# --- instructions (out of the core) --------------------------------------------------------------------------


@attrs.frozen
class Send:
    """Send `message` to peer `to` over the signaling path."""

    to: str
    message: Message


@attrs.frozen
class StartRun:
    """Start running `job` (its inputs are in place)."""

    job: Job


@attrs.frozen
class StopRun:
    """Stop the run of `job_id`; answer with `RunStopped` once its processes are gone."""

    job_id: str


@attrs.frozen
class AcceptOffer:
    """Open a data channel for `job_id` with its client: answer this SDP offer."""

    job_id: str
    client_id: str
    sdp: str
    options: dict[str, Any]


@attrs.frozen
class CleanupJob:
    """Delete the job's work directory and forget its files (cancelled, or its retention ended)."""

    job_id: str


@attrs.frozen
class Advertise:
    """The worker's status changed: publish it (e.g. in discovery metadata)."""

    status: WorkerStatus
    job_id: str | None


Instruction = Send | StartRun | StopRun | AcceptOffer | CleanupJob | Advertise
