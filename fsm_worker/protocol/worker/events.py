"""What flows into the core (events) and out of it (instructions for the shells).

Events and instructions are small frozen values. The host turns IO into events, feeds them to
`JobCoordinator.handle(event, now)` in arrival order, and carries out the instructions it gets back.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from fsm_worker.protocol.messages import JobError, JobRequest, JobResult, Message
from fsm_worker.protocol.worker.hold_events import (
    ClaimHold,
    HoldGranted,
    HoldRefused,
    HoldsOffered,
    ReleaseHold,
    SyncHolds,
)

__all__ = ["ClaimHold", "HoldGranted", "HoldRefused", "HoldsOffered", "ReleaseHold", "SyncHolds"]


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


# --- events (into the core) ----------------------------------------------------------------------------------


@attrs.frozen
class PeerMessage:
    """An application payload from a peer; `sender` is the identity the signaling server bound to it."""

    sender: str
    payload: object


@attrs.frozen
class InputsStarted:
    """The job's first input bytes arrived on the data channel: the first-input deadline no longer applies."""

    job_id: str


@attrs.frozen
class InputsReady:
    """The job's client committed its inputs on the data channel: the run may start."""

    job_id: str


# The run events: the job runner (`shells/runner/`) emits these, and the host feeds them to the core unchanged.
# A run reports started, progress*, then exactly one terminal event (succeeded, failed or stopped).


@attrs.frozen
class RunStarted:
    job_id: str
    pid: int | None = None


@attrs.frozen
class RunProgress:
    """``progress`` is in the open interval (0, 1) and never decreases within a run; ``metrics`` as the job
    printed them (the core keeps the ones the wire's `Metrics` knows). ``resume_offset`` (the core ignores
    it): the detached run's stdout offset after this event's line, journaled so a restarted worker adopts
    the run without repeating or losing progress."""

    job_id: str
    progress: float
    message: str = ""
    metrics: dict[str, Any] = attrs.field(factory=dict)
    resume_offset: int | None = None


@attrs.frozen
class RunSucceeded:
    job_id: str
    training_duration_minutes: float
    model_size_mb: float | None
    output_files: tuple[str, ...] = ()
    metrics: dict[str, Any] = attrs.field(factory=dict)
    stopped_early: bool = False  # a graceful stop (`job_stop`) ended the run; its outputs are kept

    @property
    def result(self) -> JobResult:
        return JobResult(self.training_duration_minutes, self.model_size_mb)


@attrs.frozen
class RunFailed:
    """``code`` is one of the runner's stable failure codes (`jobs.spec.ErrorCode`) or a job type's own."""

    job_id: str
    code: str
    message: str
    recoverable: bool

    @property
    def error(self) -> JobError:
        return JobError(str(self.code), self.message[-MAX_ERROR_MESSAGE:], self.recoverable)


@attrs.frozen
class RunStopped:
    """The run asked to stop by `StopRun` has ended and none of its processes is left."""

    job_id: str


RunEvent = RunStarted | RunProgress | RunSucceeded | RunFailed | RunStopped
TerminalEvent = RunSucceeded | RunFailed | RunStopped
TERMINAL_EVENTS = (RunSucceeded, RunFailed, RunStopped)
MAX_ERROR_MESSAGE = 4000


# The data channel of a job, as the host's RTC shell reports it.


@attrs.frozen
class ChannelAnswered:
    """The answer to the offer `OpenChannel` named is ready (the fast path, if any, is in place)."""

    job_id: str
    client_id: str
    sdp: str
    options: dict[str, Any]


@attrs.frozen
class ChannelOpened:
    job_id: str


@attrs.frozen
class ChannelFailed:
    """The data channel could not be set up (no answer, or it did not open in time); it is closed."""

    job_id: str
    client_id: str
    reason: str


@attrs.frozen
class ChannelClosed:
    """`CloseChannel` is done: the job's peer connection is closed."""

    job_id: str


@attrs.frozen
class JobFilesRemoved:
    """`CleanupJob` is done: the job's work directory is gone."""

    job_id: str


@attrs.frozen
class TimerFired:
    """The shell's single timer went off (the core works out which deadlines passed)."""


@attrs.frozen
class Restored:
    """The core was rebuilt from the journal in a new worker process: what lived only in the old process (its
    data channels) is gone.

    `runs_survive`: the old process's runs were detached and may still be going (`job_lifetime = "detached"`);
    the core answers with `AdoptRun` for each run it held. Otherwise they died with the worker: the core fails
    each running job (`KILLED`, recoverable) and ends each one being stopped as stopped. `resume_offsets`: the
    last journaled `RunProgress.resume_offset` per job (where an adopted run's output is read on from).
    """

    runs_survive: bool = True
    resume_offsets: dict[str, int] = attrs.field(factory=dict)


@attrs.frozen
class Started:
    """The worker process starts (after any restore, before it connects): the core answers `PruneJobDirs`."""


@attrs.frozen
class Drain:
    """Stop taking jobs and wait for the jobs held to end (the core answers `Drained` once, when they have).

    `cancel_running`: stop the running jobs now instead of letting them finish; None: as the core's
    `shutdown_policy` says. A second `Drain(cancel_running=True)` (a second Ctrl+C) stops what still runs.
    """

    cancel_running: bool | None = None


Event = (
    PeerMessage
    | InputsStarted
    | InputsReady
    | RunEvent
    | ChannelAnswered
    | ChannelOpened
    | ChannelFailed
    | ChannelClosed
    | JobFilesRemoved
    | TimerFired
    | Restored
    | Started
    | Drain
    | HoldsOffered
    | HoldGranted
    | HoldRefused
)


# --- instructions (out of the core) --------------------------------------------------------------------------


@attrs.frozen
class Send:
    """Send `message` to peer `to` over the signaling path."""

    to: str
    message: Message


@attrs.frozen
class StartRun:
    """Start running `job` (its inputs are in place).

    `cuda_visible_devices`: the GPU indices of the job's slot(s), "," joined, for the job's environment; ""
    on a worker whose slots have no GPUs but that was given a GPU list; None: leave the variable alone.
    """

    job: Job
    cuda_visible_devices: str | None = None


@attrs.frozen
class StopRun:
    """Stop the run of `job_id`; answer with `RunStopped` once its processes are gone.

    `graceful`: ask the job to wrap up and keep its outputs (a soft stop); else stop it now (a cancel).
    """

    job_id: str
    graceful: bool = False


@attrs.frozen
class AdoptRun:
    """After a restore: take back the run of `job` that outlived the old worker process, reading its output on
    from `resume_offset`; report its events as a started run's (no second `RunStarted`), its real end if it
    ended meanwhile, or `RunFailed(LOST)` if it left no trace. `stop` (None: let it go on) stops a run still
    going, graceful or not: it was being stopped when the worker went down; answer with `RunStopped`.
    """

    job: Job
    resume_offset: int = 0
    stop: bool | None = None


@attrs.frozen
class AcceptOffer:
    """Open a data channel for `job_id` with its client (replacing any earlier one): answer this SDP offer,
    then report `ChannelAnswered` and `ChannelOpened` or `ChannelFailed`.

    `inputs_committed`: the job's inputs are in place (no upload may start); `results_ready`: its results may
    be downloaded now (later, `PublishResults` says so).
    """

    job_id: str
    client_id: str
    sdp: str
    options: dict[str, Any]
    inputs_committed: bool = False
    results_ready: bool = False


@attrs.frozen
class PublishResults:
    """The job's results are final: serve them to its client on the job's data channel."""

    job_id: str


@attrs.frozen
class CloseChannel:
    """Close the job's data channel and its peer connection."""

    job_id: str


@attrs.frozen
class CleanupJob:
    """Delete the job's work directory and forget its files (cancelled, or its retention ended).

    ``reclaim``: the job ended without results to keep (cancelled, failed): what its uploads added to the
    content store goes too."""

    job_id: str
    reclaim: bool = False


@attrs.frozen
class SlotsView:
    """What a worker publishes about its slots and queue (docs/protocol.md, "Discovery"); no job ids."""

    slots: tuple[tuple[int, tuple[int, ...], int, str], ...]  # (index, gpus, memory_mb, state) per slot
    queue_length: int
    queue_size: int
    running: int

    @property
    def free_slots(self) -> int:
        return sum(state == "available" for *_, state in self.slots)


@attrs.frozen
class Advertise:
    """The worker's status or its slots changed: publish it (e.g. in discovery metadata).

    `job_id`: the job whose change this is, while it holds a slot (for logs; never published). `view`: the
    slots and queue as published; left out of equality (it is derived from the core's state).
    """

    status: WorkerStatus
    job_id: str | None
    view: SlotsView | None = attrs.field(default=None, eq=False)


@attrs.frozen
class PruneJobDirs:
    """Delete every job work directory except those of `keep` (left by an earlier process: only the jobs the
    core holds, assigned or retained with their files, are reachable)."""

    keep: tuple[str, ...]


@attrs.frozen
class Drained:
    """The drain is over: nothing is held any more, or (`reason`) the jobs stopped did not end within the
    drain's last bound. The shell may close its IO (a drained core is not one to restore)."""

    reason: str | None = None


Instruction = (
    Send
    | StartRun
    | StopRun
    | AdoptRun
    | AcceptOffer
    | PublishResults
    | CloseChannel
    | CleanupJob
    | Advertise
    | PruneJobDirs
    | Drained
    | ClaimHold
    | ReleaseHold
    | SyncHolds
)
