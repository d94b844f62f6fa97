"""The client's upload and commit as a thin shell around the pure :class:`UploadSender` core."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from fsm_worker.protocol.transfer.stats import TransferStats
from fsm_worker.protocol.transfer.uploader import UploadSender
from fsm_worker.protocol.transfer.uploader_steps import (
    Abandoned,
    AbortStream,
    ChunkSent,
    CommitDone,
    CommitRequested,
    ComputeProof,
    FailureKind,
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
)
from fsm_worker.shells.transfer.download import ProgressFn
from fsm_worker.shells.transfer.errors import (
    ChannelClosedError,
    FrameCode,
    RemoteTransferError,
    TransferError,
)
from fsm_worker.shells.transfer.files import proof_of_possession, sha256_of
from fsm_worker.shells.transfer.flow import ChannelWriter

log = logging.getLogger(__name__)


class _StopStream(Exception):
    """Internal: the core said :class:`AbortStream`; the chunk just sent was the last."""


_Outcome: TypeAlias = UploadDone | CommitDone


class UploadShell:
    """Feeds :class:`UploadSender` and carries out what it returns, in order; one operation at a time.

    Its events are the frames the endpoint routes here (:meth:`feed`), the channel's close, its one timer
    and the outcome of every task it starts (hashing in a thread, streaming a file). The caller holds
    the endpoint's lock around :meth:`upload` and :meth:`commit`.
    """

    def __init__(self, writer: ChannelWriter, reply_timeout: float, stats: TransferStats) -> None:
        self.core = UploadSender(reply_timeout, stats)
        self._writer = writer
        self._events: deque[UploaderEvent] = deque()  # the core's pending events
        self._feeding = False
        self.timer: asyncio.TimerHandle | None = None  # the one timer, at the core's next deadline
        self._timer_at: float | None = None
        self.tasks: set[asyncio.Task[None]] = set()  # the tasks it started, until they end
        self._stop_stream = False
        self._operation: asyncio.Future[_Outcome] | None = None
        self._paths: list[Path] = []
        self._on_progress: ProgressFn | None = None

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    # --- operations ---------------------------------------------------------------------------------
    async def upload(
        self, names: Sequence[str], paths: Sequence[Path], on_progress: ProgressFn | None
    ) -> list[UploadedFile]:
        """Measure and hash ``paths`` (sent as ``names``), upload them; the worker's acknowledgements."""
        infos: list[tuple[int, str]] = []
        for start in range(0, len(paths), _DESCRIBE_BATCH):  # one thread hop per batch, not per file
            batch = [Path(p) for p in paths[start : start + _DESCRIBE_BATCH]]
            infos += await asyncio.to_thread(_describe_all, batch)
        files = tuple(
            LocalFile(name, size, digest) for name, (size, digest) in zip(names, infos, strict=True)
        )
        self._paths, self._on_progress = [Path(p) for p in paths], on_progress
        try:
            done = await self._run(UploadRequested(files))
        finally:
            self._paths, self._on_progress = [], None
        assert isinstance(done, UploadDone)
        return list(done.files)

    async def commit(self) -> list[str]:
        """Commit the inputs; the names the worker committed."""
        done = await self._run(CommitRequested())
        assert isinstance(done, CommitDone)
        return list(done.files)

    async def _run(self, event: UploaderEvent) -> _Outcome:
        """Feed the request ``event`` and wait for the operation's outcome."""
        operation: asyncio.Future[_Outcome] = self._loop.create_future()
        self._operation = operation
        try:
            self.feed(event)
            return await operation
        except asyncio.CancelledError:
            if operation.cancelled() or not operation.done():  # cancelling us cancels the future too
                self._give_up()
            raise
        finally:
            self._operation = None

    # --- the core -----------------------------------------------------------------------------------
    def feed(self, event: UploaderEvent) -> None:
        """Feed ``event``, then the answers of the instructions, in order; then arm the timer."""
        self._events.append(event)
        if self._feeding:  # an instruction led to another event: it is handled after this batch
            return
        self._feeding = True
        try:
            while self._events:
                for instruction in self.core.handle(self._events.popleft(), self._loop.time()):
                    answer = self._do(instruction)
                    if answer is not None:
                        self._events.append(answer)
        finally:
            self._feeding = False
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.core.next_deadline()
        if deadline == self._timer_at:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.timer, self._timer_at = None, deadline
        if deadline is not None:
            self.timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = self._timer_at = None  # re-armed by the feed if the deadline is still ahead
        self.feed(TimerFired())

    def _do(self, instruction: UploaderInstruction) -> UploaderEvent | None:
        if isinstance(instruction, SendFrame):
            try:
                self._writer.send_frame(instruction.frame)
            except ChannelClosedError as exc:
                return SendFailed(exc.message)
        elif isinstance(instruction, UploadProgress):
            if self._on_progress is not None:
                try:
                    self._on_progress(instruction.done, instruction.total)
                except Exception as exc:  # the caller's callback: its error ends the operation
                    self._give_up(exc)
        elif isinstance(instruction, StreamFile):
            self._stop_stream = False
            self._spawn(self._stream(instruction))
        elif isinstance(instruction, AbortStream):
            self._stop_stream = True
        elif isinstance(instruction, ComputeProof):
            path, nonce = self._paths[instruction.index], instruction.nonce
            self._spawn(self._in_thread(lambda: ProofComputed(proof_of_possession(path, nonce))))
        elif isinstance(instruction, HashPrefix):
            path, offset = self._paths[instruction.index], instruction.offset
            self._spawn(self._in_thread(lambda: PrefixHashed(sha256_of(path, offset).hexdigest())))
        elif isinstance(instruction, Ignored):
            log.info("%s", instruction.message)
        elif isinstance(instruction, (UploadDone, CommitDone, OperationFailed)):
            operation = self._operation
            if operation is None or operation.done():
                return None  # the caller gave up meanwhile
            if isinstance(instruction, OperationFailed):
                operation.set_exception(_error(instruction))
            else:
                operation.set_result(instruction)
        return None

    # --- the tasks it starts ------------------------------------------------------------------------
    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _in_thread(self, work: Callable[[], UploaderEvent]) -> None:
        try:
            answer = await asyncio.to_thread(work)
        except OSError as exc:
            answer = TaskFailed(FrameCode.IO_ERROR, f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            self._give_up(exc)
            return
        self.feed(answer)

    async def _stream(self, step: StreamFile) -> None:
        writer = self._writer
        chunk_bytes, chunks = writer.chunk_bytes_sent, writer.chunks_sent

        def on_chunk(done: int) -> None:
            self.feed(ChunkSent(done))
            if self._stop_stream:
                raise _StopStream

        try:
            await writer.send_file(self._paths[step.index], step.offset, step.size, on_chunk)
            aborted = False
        except _StopStream:
            aborted = True
        except TransferError as exc:
            self.feed(TaskFailed(exc.code, exc.message, isinstance(exc, ChannelClosedError)))
            return
        except OSError as exc:
            self.feed(TaskFailed(FrameCode.IO_ERROR, f"{type(exc).__name__}: {exc}"))
            return
        except Exception as exc:
            self._give_up(exc)
            return
        sent = StreamEnded(writer.chunk_bytes_sent - chunk_bytes, writer.chunks_sent - chunks, aborted)
        self.feed(sent)

    def _give_up(self, exc: BaseException | None = None) -> None:
        """End the operation in progress without its outcome (the caller was cancelled, or ``exc``)."""
        if exc is not None and self._operation is not None and not self._operation.done():
            self._operation.set_exception(exc)
        self._stop_stream = True  # a stream stops at its next chunk (it may be the task calling this)
        for task in list(self.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        self.feed(Abandoned())


def _error(failed: OperationFailed) -> TransferError:
    if failed.kind is FailureKind.REMOTE:
        return RemoteTransferError(failed.code, failed.message, failed.name)
    if failed.kind is FailureKind.CHANNEL_CLOSED:
        return ChannelClosedError(failed.message)
    return TransferError(failed.code, failed.message, failed.name)


_DESCRIBE_BATCH = 32
"""Files measured and hashed per thread call before an upload (a cancel waits for at most one batch)."""


def _describe_all(paths: list[Path]) -> list[tuple[int, str]]:
    return [_describe(path) for path in paths]


def _describe(path: Path) -> tuple[int, str]:
    size = path.stat().st_size
    return size, sha256_of(path).hexdigest()
