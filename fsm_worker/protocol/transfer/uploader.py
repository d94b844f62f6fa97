"""The client's upload sender as a pure core: upload and commit requests in, frames and file steps out.

Per file: ``put`` (name, size, sha256) → the worker answers ``have`` (it holds the content: done, no
bytes), ``prove`` (it holds the content and wants the proof that we do too: ``proof`` → ``ready`` or
``have``) or ``ready`` at an offset. A ``ready`` at offset > 0 resumes a partial upload: the client
hashes its own first ``offset`` bytes and, when they differ from the worker's ``prefix_sha256``, asks
once more with ``put.restart`` (the worker discards the partial). Then the bytes ``[offset, size)``
stream out as chunks, ``end``, and the worker's ``ack`` must name the same size and sha256.
``commit`` → ``committed`` closes the upload.

Pipelining: the ``put`` of the next file goes out right behind the ``end`` of this one, so the worker's
``ack`` and its answer to that ``put`` come back together (one round trip per file instead of two; the
worker takes frames in order and a ``put`` after an ``end`` abandons nothing). When the operation ends
before that answer was taken (the ``ack`` failed, the caller abandoned), the answer is still owed: the
first ``ready`` / ``have`` / ``prove`` / ``error`` about a ``put`` that arrives afterwards is skipped.

Replies are taken in arrival order, one per wait; a reply that arrives while no wait is open (during a
stream, a hash, between operations) is queued for the next one, and a reply that arrives during a stream
stops it at the next chunk boundary (``end`` is then not sent). A stale ``error`` about a chunk (``ref``
``chunk``, from an abandoned upload) is skipped by every wait except the one for ``ack``. Every wait
has a deadline (``reply_timeout`` after it opened): the shell arms one timer at :meth:`next_deadline`
and feeds :class:`TimerFired`. Once the channel closed every later wait fails with ``CHANNEL_CLOSED``,
which a caller answers by going on over a new channel: the worker's verified bytes make that a resume.

An operation ends with exactly one :class:`UploadDone`, :class:`CommitDone` or
:class:`OperationFailed`, and only when no task the core started (proof, prefix hash, stream) is
still running: a failure meanwhile waits for the task's answer. The one exception is
:class:`Abandoned` (the caller was cancelled): the shell cancels its tasks and the core simply forgets
the operation, without an outcome; replies still on their way are queued for the next operation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from fsm_worker.protocol.transfer.errors import FrameCode
from fsm_worker.protocol.transfer.frames import (
    CHUNK_REF,
    Ack,
    Commit,
    Committed,
    End,
    Error,
    Have,
    Proof,
    Prove,
    Put,
    Ready,
)
from fsm_worker.protocol.transfer.paths import check_name
from fsm_worker.protocol.transfer.stats import TransferStats
from fsm_worker.protocol.transfer.uploader_phases import TASKS, WAITS, Phase
from fsm_worker.protocol.transfer.uploader_steps import (
    Abandoned,
    AbortStream,
    BadFrameIn,
    ChannelClosed,
    ChunkSent,
    CommitDone,
    CommitRequested,
    ComputeProof,
    FailureKind,
    FrameIn,
    HashPrefix,
    Ignored,
    LocalFile,
    OperationFailed,
    PrefixHashed,
    ProofComputed,
    SendFailed,
    SendFrame,
    StreamEnded,
    StreamFile,
    TaskFailed,
    TimerFired,
    UploadDone,
    UploadedFile,
    UploaderEvent,
    UploaderInstruction,
    UploadProgress,
    UploadRequested,
    UploadStatus,
    answers_put,
)

DEFAULT_REPLY_TIMEOUT = 60.0


_Arrival = FrameIn | BadFrameIn | ChannelClosed


def check_upload_names(names: Sequence[str]) -> list[str]:
    """The names files are uploaded as: each plain and safe (``FrameError``), all distinct (``ValueError``)."""
    checked = [check_name(name) for name in names]
    if len(set(checked)) != len(checked):
        raise ValueError("upload: file names must be unique")
    return checked


class UploadSender:
    """The client's side of the upload over one data channel; one operation (upload or commit) at a time."""

    def __init__(
        self,
        reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
        stats: TransferStats | None = None,
        *,
        pipeline: bool = True,
    ) -> None:
        self.reply_timeout = reply_timeout
        self.pipeline = pipeline  # send the next file's put right behind this file's end
        self.stats = stats if stats is not None else TransferStats()
        self.phase = Phase.IDLE
        self.inbox: deque[_Arrival] = deque()  # replies no wait took yet; a ChannelClosed stays for good
        self.closed = False
        self.deadline: float | None = None
        self.failure: OperationFailed | None = None  # how the operation ends once its task answers
        self.aborting = False  # AbortStream sent for the stream in flight
        # the upload in progress
        self.files: tuple[LocalFile, ...] = ()
        self.index = 0  # the file in flight
        self.uploaded: list[UploadedFile] = []
        self.ready: Ready | None = None  # the ready whose prefix is being checked
        self.restarted = False  # this file was asked again with put.restart (its prefix is not checked again)
        self.offset = 0  # where the stream of this file started
        self.file_sent = 0  # chunk bytes of this file sent
        self.base = 0  # bytes of the files before this one
        self.total = 0
        self.last = -1  # the last progress reported
        self.next_announced = False  # the put of files[index + 1] is out (sent behind this file's end)
        self.put_owed = False  # an ended operation's pipelined put still has its answer coming: skip it

    @property
    def busy(self) -> bool:
        """Whether an operation is in progress."""
        return self.phase is not Phase.IDLE

    def next_deadline(self) -> float | None:
        """When the shell must feed :class:`TimerFired` (``None``: no timer)."""
        return self.deadline

    def handle(self, event: UploaderEvent, now: float) -> list[UploaderInstruction]:
        """Feed one event; returns the instructions to carry out in order. Never raises."""
        if isinstance(event, (FrameIn, BadFrameIn, ChannelClosed)):
            return self._arrived(event, now)
        if isinstance(event, UploadRequested):
            return self._start_upload(event.files, now)
        if isinstance(event, CommitRequested):
            if self.busy:
                return [Ignored("commit refused: an operation is in progress")]
            return [SendFrame(Commit()), *self._wait(Phase.COMMITTING, now)]
        if isinstance(event, TimerFired):
            if self.phase in WAITS and self.deadline is not None and now >= self.deadline:
                return self._fail(
                    FailureKind.LOCAL, FrameCode.TIMEOUT, f"no reply within {self.reply_timeout:g} s"
                )
            return []
        if isinstance(event, Abandoned):
            return self._finish(None) if self.busy else []
        if isinstance(event, SendFailed):
            if self.busy:
                return self._fail(FailureKind.CHANNEL_CLOSED, FrameCode.CHANNEL_CLOSED, event.message)
            return []
        return self._answer(event, now)

    # --- answers of the shell's tasks ----------------------------------------------------------------------
    def _answer(
        self, event: ProofComputed | PrefixHashed | ChunkSent | StreamEnded | TaskFailed, now: float
    ) -> list[UploaderInstruction]:
        phase = self.phase
        if isinstance(event, ChunkSent) and phase is Phase.STREAMING:
            return self._progress(event.done)
        if isinstance(event, TaskFailed) and phase in TASKS:
            kind = FailureKind.CHANNEL_CLOSED if event.channel_closed else FailureKind.LOCAL
            return self._finish(self.failure or OperationFailed(kind, event.code, event.message))
        if isinstance(event, ProofComputed) and phase is Phase.PROVING:
            if self.failure is not None:
                return self._finish(self.failure)
            file = self.files[self.index]
            return [SendFrame(Proof(name=file.name, sha256=event.proof)), *self._wait(Phase.PROVED, now)]
        if isinstance(event, PrefixHashed) and phase is Phase.CHECKING:
            if self.failure is not None:
                return self._finish(self.failure)
            assert self.ready is not None
            ready, self.ready = self.ready, None
            if event.sha256 == ready.prefix_sha256:
                return self._stream(ready.offset)
            self.restarted = True  # our bytes differ from the partial: start the file again
            return self._announce(now, restart=True)
        if isinstance(event, StreamEnded) and phase is Phase.STREAMING:
            self.stats.chunk_bytes_sent += event.chunk_bytes
            self.stats.chunks_sent += event.chunks
            self.file_sent += event.chunk_bytes
            self.aborting = False
            if self.failure is not None:
                return self._finish(self.failure)
            if event.aborted:  # a reply is waiting; no end
                return self._wait(Phase.ACKING, now)
            out: list[UploaderInstruction] = [SendFrame(End(name=self.files[self.index].name))]
            if self.pipeline and self.index + 1 < len(self.files):
                out.append(SendFrame(self._put(self.files[self.index + 1])))
                self.next_announced = True
            return [*out, *self._wait(Phase.ACKING, now)]
        return []  # an answer nobody waits for

    # --- replies ---------------------------------------------------------------------------------------
    def _arrived(self, arrival: _Arrival, now: float) -> list[UploaderInstruction]:
        if self.closed:
            return []  # nothing follows the close
        self.closed = isinstance(arrival, ChannelClosed)
        if self.put_owed and answers_put(arrival):
            self.put_owed = False
            return [Ignored("skipping the answer to a put of an operation that is over")]
        self.inbox.append(arrival)
        if self.phase in WAITS:
            return self._drain(now)
        if self.phase is Phase.STREAMING and not self.aborting:
            self.aborting = True
            return [AbortStream()]
        return []

    def _wait(self, phase: Phase, now: float) -> list[UploaderInstruction]:
        self.phase = phase
        self.deadline = now + self.reply_timeout
        return self._drain(now)

    def _drain(self, now: float) -> list[UploaderInstruction]:
        """Take queued replies while a wait is open."""
        out: list[UploaderInstruction] = []
        while self.phase in WAITS and self.inbox:
            arrival = self.inbox[0]
            if isinstance(arrival, ChannelClosed):  # stays queued: every later wait fails too
                out += self._fail(
                    FailureKind.CHANNEL_CLOSED,
                    FrameCode.CHANNEL_CLOSED,
                    "data channel closed while waiting for the worker",
                )
                break
            self.inbox.popleft()
            out += self._reply(arrival, now)
        return out

    def _reply(self, arrival: FrameIn | BadFrameIn, now: float) -> list[UploaderInstruction]:
        if isinstance(arrival, BadFrameIn):
            error = arrival.error
            return self._fail(FailureKind.LOCAL, error.code, f"bad frame from the worker: {error}")
        frame = arrival.frame
        if isinstance(frame, Error):
            if frame.ref == CHUNK_REF and self.phase is not Phase.ACKING:
                return [Ignored(f"ignoring a stale chunk error: {frame.message}")]  # from an abandoned upload
            return self._fail(FailureKind.REMOTE, frame.code, frame.message, frame.name)
        if not isinstance(frame, WAITS[self.phase]):
            return self._fail(
                FailureKind.LOCAL, FrameCode.UNEXPECTED, f"unexpected {frame.TYPE!r} frame from the worker"
            )
        self.deadline = None
        if isinstance(frame, Committed):
            return self._finish(CommitDone(tuple(frame.files)))
        if isinstance(frame, Prove):
            self.phase = Phase.PROVING
            return [ComputeProof(self.index, frame.nonce)]
        if isinstance(frame, Have):
            return self._deduped(now)
        if isinstance(frame, Ready):
            if frame.offset and not self.restarted:
                self.phase, self.ready = Phase.CHECKING, frame
                return [HashPrefix(self.index, frame.offset)]
            return self._stream(frame.offset)
        assert isinstance(frame, Ack)
        return self._acked(frame, now)

    # --- the upload ----------------------------------------------------------------------------------------
    def _start_upload(self, files: tuple[LocalFile, ...], now: float) -> list[UploaderInstruction]:
        if self.busy:
            return [Ignored("upload refused: an operation is in progress")]
        self.files, self.index, self.uploaded = files, 0, []
        self.base, self.total, self.last = 0, sum(file.size for file in files), -1
        if not files:
            return self._finish(UploadDone(()))
        return self._announce(now)

    def _announce(self, now: float, restart: bool = False) -> list[UploaderInstruction]:
        return [SendFrame(self._put(self.files[self.index], restart)), *self._wait(Phase.ANNOUNCED, now)]

    @staticmethod
    def _put(file: LocalFile, restart: bool = False) -> Put:
        return Put(name=file.name, size=file.size, sha256=file.sha256, restart=restart)

    def _stream(self, offset: int) -> list[UploaderInstruction]:
        file = self.files[self.index]
        if offset:
            self.stats.files_resumed += 1
            self.stats.bytes_skipped += offset
        self.phase, self.offset, self.file_sent = Phase.STREAMING, offset, 0
        out: list[UploaderInstruction] = [StreamFile(self.index, offset, file.size)]
        if self.inbox:  # a reply is already waiting: the stream stops after its first chunk
            self.aborting = True
            out.append(AbortStream())
        return out

    def _deduped(self, now: float) -> list[UploaderInstruction]:
        file = self.files[self.index]
        self.stats.files_deduped += 1
        self.stats.bytes_skipped += file.size
        self.uploaded.append(UploadedFile(file.name, file.size, file.sha256, UploadStatus.DEDUPED, 0))
        return self._next_file(now)

    def _acked(self, ack: Ack, now: float) -> list[UploaderInstruction]:
        file = self.files[self.index]
        if (ack.name, ack.size, ack.sha256) != (file.name, file.size, file.sha256):
            message = f"acknowledgement for {ack.name!r} does not match {file.name!r}"
            return self._fail(FailureKind.LOCAL, FrameCode.UNEXPECTED, message)
        self.stats.files_sent += 1
        status = UploadStatus.RESUMED if self.offset else UploadStatus.SENT
        self.uploaded.append(UploadedFile(file.name, file.size, file.sha256, status, self.file_sent))
        return self._next_file(now)

    def _next_file(self, now: float) -> list[UploaderInstruction]:
        file = self.files[self.index]
        out = self._progress(file.size)
        self.base += file.size
        self.index += 1
        self.restarted, self.offset, self.file_sent = False, 0, 0
        if self.index == len(self.files):
            return [*out, *self._finish(UploadDone(tuple(self.uploaded)))]
        if self.next_announced:  # its put went out behind the last end: its answer may be queued already
            self.next_announced = False
            return [*out, *self._wait(Phase.ANNOUNCED, now)]
        return [*out, *self._announce(now)]

    def _progress(self, file_done: int) -> list[UploaderInstruction]:
        done = self.base + file_done
        if done == self.last:
            return []
        self.last = done
        return [UploadProgress(done, self.total)]

    # --- the end of an operation ---------------------------------------------------------------------------
    def _fail(
        self, kind: FailureKind, code: str, message: str, name: str | None = None
    ) -> list[UploaderInstruction]:
        failure = OperationFailed(kind, code, message, name)
        if self.phase not in TASKS:
            return self._finish(failure)
        self.failure = self.failure or failure  # the operation ends when the task answers
        if self.phase is Phase.STREAMING and not self.aborting:
            self.aborting = True
            return [AbortStream()]
        return []

    def _finish(self, outcome: UploadDone | CommitDone | OperationFailed | None) -> list[UploaderInstruction]:
        self.phase, self.deadline, self.failure, self.aborting, self.ready = (
            Phase.IDLE,
            None,
            None,
            False,
            None,
        )
        self.files, self.index, self.uploaded, self.restarted = (), 0, [], False
        self.offset = self.file_sent = self.base = self.total = 0
        self.last = -1
        # a pipelined put's answer is owed: skip it when it comes (it is not queued yet: the inbox was
        # empty when that put went out, and in the wait that followed every reply was taken at once)
        self.put_owed, self.next_announced = self.put_owed or self.next_announced, False
        return [] if outcome is None else [outcome]

    def validate_state(self) -> None:
        """Invariants (tests call this after every step)."""
        assert (self.deadline is not None) == (self.phase in WAITS)
        assert self.failure is None or self.phase in TASKS
        assert not self.aborting or self.phase is Phase.STREAMING
        assert (self.ready is not None) == (self.phase is Phase.CHECKING)
        assert not self.next_announced or (self.phase is Phase.ACKING and self.index + 1 < len(self.files))
        assert not (self.put_owed and self.next_announced)
        assert self.phase not in WAITS or not self.inbox, "an open wait takes every queued reply"
        assert self.closed == any(isinstance(item, ChannelClosed) for item in self.inbox)
        assert not self.closed or isinstance(self.inbox[-1], ChannelClosed)
        if self.phase is Phase.IDLE:
            assert (self.files, self.index, self.uploaded, self.base, self.total) == ((), 0, [], 0, 0)
        elif self.phase is Phase.COMMITTING:
            assert (self.files, self.uploaded) == ((), [])
        else:
            assert 0 <= self.index < len(self.files)
            assert len(self.uploaded) == self.index
            assert self.base == sum(file.size for file in self.files[: self.index])
            assert self.file_sent <= max(0, self.files[self.index].size - self.offset)
            assert -1 <= self.last <= self.total
