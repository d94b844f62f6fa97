"""Client side of the transfer protocol: upload inputs, commit, download results."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Collection, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import attrs

from fsm_worker.protocol.transfer.download import DownloadLimits
from fsm_worker.protocol.transfer.frames import (
    MAX_CONTROL_FRAME,
    End,
    Error,
    FetchResults,
    FileHeader,
    Held,
    Manifest,
    Partial,
    Results,
    ResultsDone,
    Same,
    encode_frame,
    parse_frame,
)
from fsm_worker.protocol.transfer.stats import TransferStats
from fsm_worker.protocol.transfer.uploader import DEFAULT_REPLY_TIMEOUT, UploadSender, check_upload_names
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
)
from fsm_worker.shells.transfer import destination
from fsm_worker.shells.transfer.download import DownloadShell, ProgressFn
from fsm_worker.shells.transfer.errors import (
    ChannelClosedError,
    FrameCode,
    FrameError,
    RemoteTransferError,
    TransferError,
)
from fsm_worker.shells.transfer.files import proof_of_possession, sha256_of
from fsm_worker.shells.transfer.flow import ChannelWriter, DataChannel, TransferTuning, off

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_REPLY_TIMEOUT",
    "ClientTransferEndpoint",
    "DownloadInterrupted",
    "PartialDownload",
    "UploadStatus",
    "UploadedFile",
]


class _StopStream(Exception):
    """Internal: the core said :class:`AbortStream`; the chunk just sent was the last."""


_Outcome: TypeAlias = UploadDone | CommitDone


class ClientTransferEndpoint:
    """Drives the transfer protocol over one open data channel; one operation at a time.

    Uploads and commits are decided by the pure :class:`UploadSender` core: this shell feeds it the
    frames that arrive, the channel's close, the timer and the outcome of every task it starts
    (hashing in a thread, streaming a file), and carries out what it returns, in order.
    Every wait for a worker reply is bounded by ``reply_timeout``; failures raise
    :class:`TransferError` subclasses carrying the worker's error code and message.
    """

    def __init__(
        self,
        channel: DataChannel,
        *,
        tuning: TransferTuning | None = None,
        reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
        download_limits: DownloadLimits | None = None,
    ) -> None:
        self.channel = channel
        self.download_limits = download_limits or DownloadLimits()
        self.reply_timeout = reply_timeout
        self.stats = TransferStats()
        self.uploader = UploadSender(reply_timeout, self.stats)
        self._writer = ChannelWriter(channel, tuning or TransferTuning())
        self._download: DownloadShell | None = None
        self._lock = asyncio.Lock()
        # the upload shell: the core's pending events, its one timer, the tasks it started
        self._events: deque[UploaderEvent] = deque()
        self._feeding = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop_stream = False
        self._operation: asyncio.Future[_Outcome] | None = None
        self._paths: list[Path] = []
        self._on_progress: ProgressFn | None = None
        channel.on("message", self._on_message)
        channel.on("close", self._on_close)
        if channel.readyState in ("closing", "closed"):
            self._on_close()

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def close(self) -> None:
        """Stop listening to the channel (the channel itself is left to its owner)."""
        off(self.channel, "message", self._on_message)
        off(self.channel, "close", self._on_close)
        self._writer.detach()
        self._on_close()

    # --- channel events (sync) ----------------------------------------------------------------------
    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            if self._download is not None and not self._download.future.done():
                self._download.on_chunk(message)
            else:
                log.warning("ignoring a %d-byte chunk outside a download", len(message))
            return
        try:
            frame = parse_frame(message)
        except FrameError as exc:
            if self._download is not None:
                self._download.on_bad_frame(exc)
            else:
                self._feed(BadFrameIn(exc))
            return
        download_frames = (Results, Manifest, FileHeader, Same, End, ResultsDone, Error)
        if self._download is not None and isinstance(frame, download_frames):
            self._download.on_frame(frame)
        else:
            self._feed(FrameIn(frame))

    def _on_close(self) -> None:
        self._feed(ChannelClosed())
        if self._download is not None:
            self._download.fail(ChannelClosedError("data channel closed during download"))

    # --- the upload core ----------------------------------------------------------------------------
    def _feed(self, event: UploaderEvent) -> None:
        """Feed ``event``, then the answers of the instructions, in order; then arm the timer."""
        self._events.append(event)
        if self._feeding:  # an instruction led to another event: it is handled after this batch
            return
        self._feeding = True
        try:
            while self._events:
                for instruction in self.uploader.handle(self._events.popleft(), self._loop.time()):
                    answer = self._do(instruction)
                    if answer is not None:
                        self._events.append(answer)
        finally:
            self._feeding = False
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.uploader.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None  # re-armed by the feed if the deadline is still ahead
        self._feed(TimerFired())

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

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _in_thread(self, work: Callable[[], UploaderEvent]) -> None:
        try:
            answer = await asyncio.to_thread(work)
        except OSError as exc:
            answer = TaskFailed(FrameCode.IO_ERROR, f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            self._give_up(exc)
            return
        self._feed(answer)

    async def _stream(self, step: StreamFile) -> None:
        writer = self._writer
        chunk_bytes, chunks = writer.chunk_bytes_sent, writer.chunks_sent

        def on_chunk(done: int) -> None:
            self._feed(ChunkSent(done))
            if self._stop_stream:
                raise _StopStream

        try:
            await writer.send_file(self._paths[step.index], step.offset, step.size, on_chunk)
            aborted = False
        except _StopStream:
            aborted = True
        except TransferError as exc:
            self._feed(TaskFailed(exc.code, exc.message, isinstance(exc, ChannelClosedError)))
            return
        except OSError as exc:
            self._feed(TaskFailed(FrameCode.IO_ERROR, f"{type(exc).__name__}: {exc}"))
            return
        except Exception as exc:
            self._give_up(exc)
            return
        sent = StreamEnded(writer.chunk_bytes_sent - chunk_bytes, writer.chunks_sent - chunks, aborted)
        self._feed(sent)

    def _give_up(self, exc: BaseException | None = None) -> None:
        """End the operation in progress without its outcome (the caller was cancelled, or ``exc``)."""
        if exc is not None and self._operation is not None and not self._operation.done():
            self._operation.set_exception(exc)
        self._stop_stream = True  # a stream stops at its next chunk (it may be the task calling this)
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        self._feed(Abandoned())

    async def _run(self, event: UploaderEvent) -> _Outcome:
        """Feed the request ``event`` and wait for the operation's outcome."""
        operation: asyncio.Future[_Outcome] = self._loop.create_future()
        self._operation = operation
        try:
            self._feed(event)
            return await operation
        except asyncio.CancelledError:
            if operation.cancelled() or not operation.done():  # cancelling us cancels the future too
                self._give_up()
            raise
        finally:
            self._operation = None

    # --- upload -------------------------------------------------------------------------------------
    async def upload(
        self, paths: Sequence[Path], on_progress: ProgressFn | None = None
    ) -> list[UploadedFile]:
        """Upload files (named by their base name); returns them as acknowledged by the worker.

        Raises :class:`RemoteTransferError` for the worker's ``error``, :class:`ChannelClosedError` when
        the channel goes (upload again over a new one: it resumes), and :class:`TransferError` for a bad
        reply, no reply within ``reply_timeout`` or a local read error (``IO_ERROR``, chained to the
        ``OSError``). A missing input raises its ``OSError`` before anything is sent.
        """
        names = check_upload_names([Path(p).name for p in paths])
        async with self._lock:
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

    # --- commit / download --------------------------------------------------------------------------
    async def commit(self) -> list[str]:
        """Tell the worker the inputs are complete; returns the input names it committed."""
        async with self._lock:
            done = await self._run(CommitRequested())
            assert isinstance(done, CommitDone)
            return list(done.files)

    async def download(
        self,
        dest_dir: Path,
        on_progress: ProgressFn | None = None,
        *,
        job_id: str | None = None,
        keep_partial: bool = False,
        resume: PartialDownload | None = None,
        expect: Collection[str] = (),
    ) -> list[Path]:
        """Fetch the job's result files, verified by size and sha256, keeping their relative paths.

        With ``job_id`` the files land in the folder ``dest_dir/<job_id>``; without, directly in
        ``dest_dir``. Either way nothing existing is replaced: a file already there with the same size
        and sha256 counts as done (with ``job_id`` it is not even resent), different content is refused
        with ``EXISTS``. Unsafe names are refused and the download is capped by ``download_limits``; on
        failure nothing is left behind, except with ``keep_partial``: a channel drop then raises
        :class:`DownloadInterrupted` whose ``partial`` resumes it (``resume=``) on a new channel, from
        the verified offset of the file in flight, without resending the files already received.

        Without ``job_id``, ``expect`` names results this client received into ``dest_dir`` before (a repeat
        download): those still there are offered by content and not resent if unchanged; no other file
        of ``dest_dir`` is looked at.
        """
        async with self._lock:
            partial: Partial | None = None
            part: tuple[str, Path, int, hashlib._Hash | None] | None = None
            if resume is None:
                final, staging = await asyncio.to_thread(destination.prepare, dest_dir, job_id)
            else:
                final, staging = resume.final, resume.staging
                hasher = None
                if resume.offset > 0:  # re-hash the kept prefix: the worker checks it before skipping it
                    hasher = await asyncio.to_thread(sha256_of, resume.part, resume.offset)
                    partial = Partial(resume.name, resume.offset, hasher.hexdigest())
                part = (resume.name, resume.part, resume.offset, hasher)
            held: dict[str, tuple[int, str]] = {}
            if job_id is not None:
                found = await asyncio.to_thread(destination.held, final, self.download_limits.max_files)
                held = _fitting(found)
            elif expect:
                limit = self.download_limits.max_files
                held = _fitting(await asyncio.to_thread(destination.held_named, final, expect, limit))
            staged = dict(resume.received) if resume is not None else {}
            held.update(staged)
            download = self._download = DownloadShell(
                staging, self.download_limits, on_progress, self.stats, held, part, self.reply_timeout
            )
            published = False
            interrupted: PartialDownload | None = None
            try:
                have = [Held(name, size, sha256) for name, (size, sha256) in held.items()]
                self._writer.send_frame(FetchResults(have=have, resume=partial))
                download.start()  # the core's idle deadline: every frame or chunk from the worker moves it
                names = await download.future
                kept = tuple(name for name in download.core.kept if name not in staged)
                paths = await asyncio.to_thread(
                    destination.publish, staging, final, names, per_job=job_id is not None, kept=kept
                )
                published = True
                return paths
            except ChannelClosedError as exc:
                if not keep_partial or download.partial is None:
                    raise
                name, part_path, offset = download.partial
                core = download.core
                received = {
                    **staged,
                    **{n: (e.size, e.sha256) for n, e in zip(core.names, core.manifest, strict=False)},
                }
                for kept_name in core.kept:
                    if kept_name not in staged:
                        received.pop(kept_name, None)
                interrupted = PartialDownload(final, staging, name, part_path, offset, received)
                raise DownloadInterrupted(exc.message, interrupted) from exc
            finally:
                download.fail(ChannelClosedError("download abandoned"))
                self._download = None
                if not published and interrupted is None:
                    await asyncio.to_thread(destination.discard, staging)


@attrs.frozen
class PartialDownload:
    """What a dropped download left in its staging folder: pass it as ``download(resume=...)``."""

    final: Path
    staging: Path
    name: str  # the result in flight
    part: Path  # its partial file
    offset: int  # bytes of it received
    received: dict[str, tuple[int, str]]  # results complete in staging: name -> (size, sha256)


class DownloadInterrupted(ChannelClosedError):
    """The channel closed during a ``keep_partial`` download; ``partial`` resumes it."""

    def __init__(self, message: str, partial: PartialDownload) -> None:
        super().__init__(message)
        self.partial = partial


def _fitting(found: dict[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
    """As many held files as fit one ``fetch_results`` frame; the rest are simply sent again."""
    fitting: dict[str, tuple[int, str]] = {}
    budget = MAX_CONTROL_FRAME - 256
    for name, (size, sha256) in found.items():
        budget -= len(encode_frame(FetchResults(have=[Held(name, size, sha256)])))
        if budget < 0:
            break
        fitting[name] = (size, sha256)
    return fitting


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
