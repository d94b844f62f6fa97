"""What flows into the core: the events the host feeds to `JobCoordinator.handle(event, now)` in arrival order.

Events are small frozen values; the host turns IO into them. What comes back out is in `instructions`.
"""

from __future__ import annotations

from typing import Any

import attrs

from fsm_worker.protocol.messages import JobError, JobResult
from fsm_worker.protocol.worker.hold_events import (
    ClaimHold,
    HoldGranted,
    HoldRefused,
    HoldsOffered,
    HoldUnanswered,
    ReleaseHold,
    SyncHolds,
)

__all__ = [
    "ClaimHold",
    "HoldGranted",
    "HoldRefused",
    "HoldUnanswered",
    "HoldsOffered",
    "ReleaseHold",
    "SyncHolds",
]


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
    | HoldUnanswered
    | HoldRefused
)
