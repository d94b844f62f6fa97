"""What flows out of the core: the instructions the host carries out (sends, runs, channels, files)."""

from __future__ import annotations

from typing import Any

import attrs

from fsm_worker.protocol.messages import Message
from fsm_worker.protocol.worker.hold_events import ClaimHold, ReleaseHold, SyncHolds
from fsm_worker.protocol.worker.states import Job, WorkerStatus


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
