"""Events and instructions of the client's upload sender (:mod:`fsm_worker.protocol.transfer.uploader`).

Frames from the worker arrive as :class:`~fsm_worker.protocol.transfer.upload_steps.FrameIn` /
:class:`~fsm_worker.protocol.transfer.upload_steps.BadFrameIn` (the same events the receiver takes).
Every other event is the answer to an instruction, a request of the API, the channel's fate or the timer.
"""

from __future__ import annotations

import enum
from typing import TypeAlias

import attrs

from fsm_worker.protocol.transfer.frames import Error, Frame, Have, Prove, Put, Ready
from fsm_worker.protocol.transfer.upload_steps import BadFrameIn, FrameIn


class UploadStatus(enum.StrEnum):
    """How a file reached the worker."""

    SENT = "sent"
    DEDUPED = "deduped"  # the worker already had the content; no bytes sent
    RESUMED = "resumed"  # only the bytes after a verified partial upload were sent


@attrs.frozen
class UploadedFile:
    """One uploaded file as verified (acknowledged) by the worker."""

    name: str
    size: int
    sha256: str
    status: UploadStatus
    bytes_sent: int


@attrs.frozen
class LocalFile:
    """A file to upload as the shell measured it: its name on the worker, size and sha256."""

    name: str
    size: int
    sha256: str


class FailureKind(enum.StrEnum):
    """Who ended an operation: the worker (an ``error`` frame), the channel, or this side."""

    REMOTE = "remote"  # the worker sent an ``error`` frame
    CHANNEL_CLOSED = "channel_closed"  # the data channel went away; a new channel resumes
    LOCAL = "local"  # a bad or unexpected reply, no reply in time, a local IO error


# --- events: what the API asked, what the shell saw or did -------------------------------------------------
@attrs.frozen
class UploadRequested:
    """Upload ``files`` in this order (names unique; see :func:`~.uploader.check_upload_names`)."""

    files: tuple[LocalFile, ...]


@attrs.frozen
class CommitRequested:
    """Tell the worker the inputs are complete."""


@attrs.frozen
class ChannelClosed:
    """The data channel closed (or the endpoint stopped listening to it); every later wait fails."""


@attrs.frozen
class SendFailed:
    """A :class:`SendFrame` could not be carried out: the channel is no longer open."""

    message: str


@attrs.frozen
class TimerFired:
    """The shell's one timer (armed at :meth:`~.uploader.UploadSender.next_deadline`) went off."""


@attrs.frozen
class ProofComputed:
    """Answer to :class:`ComputeProof`."""

    proof: str


@attrs.frozen
class PrefixHashed:
    """Answer to :class:`HashPrefix`."""

    sha256: str


@attrs.frozen
class ChunkSent:
    """One chunk of the :class:`StreamFile` in flight went out; ``done`` bytes of the file are sent."""

    done: int


@attrs.frozen
class StreamEnded:
    """Answer to :class:`StreamFile`: the stream stopped, after ``chunk_bytes`` in ``chunks`` messages.

    ``aborted`` when it stopped early on :class:`AbortStream`.
    """

    chunk_bytes: int
    chunks: int
    aborted: bool = False


@attrs.frozen
class TaskFailed:
    """A :class:`ComputeProof`, :class:`HashPrefix` or :class:`StreamFile` failed (disk, send buffer, channel)."""

    code: str
    message: str
    channel_closed: bool = False


@attrs.frozen
class Abandoned:
    """The caller gave up on the operation in progress (cancelled); the shell has cancelled its tasks."""


UploaderEvent: TypeAlias = (
    UploadRequested
    | CommitRequested
    | FrameIn
    | BadFrameIn
    | ChannelClosed
    | SendFailed
    | TimerFired
    | ProofComputed
    | PrefixHashed
    | ChunkSent
    | StreamEnded
    | TaskFailed
    | Abandoned
)


# --- instructions: what the shell must do --------------------------------------------------------------
@attrs.frozen
class SendFrame:
    """Send a control frame; if the channel is not open, feed :class:`SendFailed`."""

    frame: Frame


@attrs.frozen
class ComputeProof:
    """sha256 of ``nonce`` (ASCII) followed by the bytes of file ``index`` (in a thread)."""

    index: int
    nonce: str


@attrs.frozen
class HashPrefix:
    """sha256 of the first ``offset`` bytes of file ``index`` (in a thread)."""

    index: int
    offset: int


@attrs.frozen
class StreamFile:
    """Send bytes ``[offset, size)`` of file ``index`` as flow-controlled chunks.

    Feed :class:`ChunkSent` after every chunk and :class:`StreamEnded` at the end; after an
    :class:`AbortStream` stop at the next chunk boundary (the chunk just sent is the last).
    """

    index: int
    offset: int
    size: int


@attrs.frozen
class AbortStream:
    """Stop the :class:`StreamFile` in flight after its current chunk (a reply arrived meanwhile)."""


@attrs.frozen
class UploadProgress:
    """``on_progress(done, total)`` over the whole upload."""

    done: int
    total: int


@attrs.frozen
class Ignored:
    """Nothing to do; worth a log line (``message``)."""

    message: str


@attrs.frozen
class UploadDone:
    """The upload is over: every file acknowledged (or already held) by the worker, in order."""

    files: tuple[UploadedFile, ...]


@attrs.frozen
class CommitDone:
    """The worker committed the inputs; ``files`` are the names it holds."""

    files: tuple[str, ...]


@attrs.frozen
class OperationFailed:
    """The operation in progress (upload or commit) is over and failed."""

    kind: FailureKind
    code: str
    message: str
    name: str | None = None


UploaderInstruction: TypeAlias = (
    SendFrame
    | ComputeProof
    | HashPrefix
    | StreamFile
    | AbortStream
    | UploadProgress
    | Ignored
    | UploadDone
    | CommitDone
    | OperationFailed
)


def answers_put(event: object) -> bool:
    """Whether ``event`` is the worker's answer to a ``put`` (``ready``, ``have``, ``prove``, its ``error``)."""
    if not isinstance(event, FrameIn):
        return False
    frame = event.frame
    return isinstance(frame, (Ready, Have, Prove)) or (isinstance(frame, Error) and frame.ref == Put.TYPE)


__all__ = [
    "Abandoned",
    "AbortStream",
    "BadFrameIn",
    "ChannelClosed",
    "ChunkSent",
    "CommitDone",
    "CommitRequested",
    "ComputeProof",
    "FailureKind",
    "FrameIn",
    "HashPrefix",
    "Ignored",
    "LocalFile",
    "OperationFailed",
    "PrefixHashed",
    "ProofComputed",
    "SendFailed",
    "SendFrame",
    "StreamEnded",
    "StreamFile",
    "TaskFailed",
    "TimerFired",
    "UploadDone",
    "UploadProgress",
    "UploadRequested",
    "UploadStatus",
    "UploadedFile",
    "UploaderEvent",
    "UploaderInstruction",
    "answers_put",
]
