"""Worker side of the transfer protocol: receives a job's inputs, serves its results."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from fsm_worker.protocol.transfer.frames import (
    CHUNK_REF,
    Ack,
    Commit,
    Committed,
    End,
    Error,
    FetchResults,
    FileHeader,
    Frame,
    Have,
    Put,
    Ready,
    Results,
    ResultsDone,
    parse_frame,
)
from fsm_worker.shells.transfer.errors import ErrorCode, ProtocolError, TransferError
from fsm_worker.shells.transfer.files import FileSink, sha256_of
from fsm_worker.shells.transfer.flow import ChannelWriter, DataChannel, TransferTuning, off
from fsm_worker.shells.transfer.names import check_name, ensure_real_dir, regular_file_size, safe_target
from fsm_worker.shells.transfer.stats import TransferStats
from fsm_worker.shells.transfer.store import ContentStore

log = logging.getLogger(__name__)

INPUTS_DIR = "inputs"
PARTIAL_DIR = ".partial"
_CLOSED = object()

CommitFn = Callable[[list[Path]], None]
ResultsFn = Callable[[], "list[Path] | None"]
WorkerProgressFn = Callable[[str, int, int], None]


class WorkerTransferEndpoint:
    """Serves one data channel for one job.

    Uploads land in ``job_dir/inputs`` (partials in ``job_dir/.partial``, named by sha256, so a new
    endpoint for the same job resumes them). ``commit`` calls ``on_commit(paths)``; ``fetch_results``
    sends what ``results()`` returns (``None`` → ``NOT_READY``). Frames are handled strictly in
    arrival order by one task; a bad frame gets an ``error`` frame and changes nothing. Create a new
    endpoint for every channel; pass ``committed=True`` when the job's inputs were already committed.
    """

    def __init__(
        self,
        channel: DataChannel,
        job_dir: Path,
        store: ContentStore,
        max_upload_bytes: int,
        on_commit: CommitFn,
        results: ResultsFn,
        *,
        tuning: TransferTuning | None = None,
        on_progress: WorkerProgressFn | None = None,
        committed: bool = False,
    ) -> None:
        self.channel = channel
        self.job_dir = job_dir
        self.inputs_dir = job_dir / INPUTS_DIR
        self.partial_dir = job_dir / PARTIAL_DIR
        self.store = store
        self.max_upload_bytes = max_upload_bytes
        self.on_commit = on_commit
        self.results = results
        self.on_progress = on_progress
        self.committed = committed
        self.stats = TransferStats()
        self._writer = ChannelWriter(channel, tuning or TransferTuning())
        self._sink: FileSink | None = None
        self._stray_chunk_reported = False
        self._target: Path | None = None
        self._sending: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[str | bytes | object] = asyncio.Queue()
        channel.on("message", self._on_message)
        channel.on("close", self._on_close)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="worker-transfer")
        if channel.readyState in ("closing", "closed"):
            self._on_close()

    # --- channel events (sync, never raise) ---------------------------------------------------------
    def _on_message(self, message: str | bytes) -> None:
        self._queue.put_nowait(message)

    def _on_close(self) -> None:
        self._queue.put_nowait(_CLOSED)

    async def wait_closed(self) -> None:
        """Return once the channel closed and the endpoint released its files."""
        await asyncio.shield(self._task)

    async def aclose(self) -> None:
        """Stop serving (the channel itself is left to its owner); partial uploads are kept."""
        self._on_close()
        await self.wait_closed()

    # --- main loop ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            while (message := await self._queue.get()) is not _CLOSED:
                ref = CHUNK_REF if isinstance(message, bytes) else None
                try:
                    if isinstance(message, bytes):
                        self._on_chunk(message)
                    elif isinstance(message, str):
                        self._stray_chunk_reported = False
                        await self._on_text(message)
                except ProtocolError as exc:
                    self._error(exc.code, str(exc), exc.name, ref)
                except TransferError as exc:
                    self._error(exc.code, exc.message, exc.name, ref)
                except OSError as exc:
                    log.warning("transfer I/O error: %s", exc)
                    self._error(ErrorCode.IO_ERROR, f"{type(exc).__name__}: {exc.strerror or exc}", None, ref)
                except Exception:
                    log.exception("transfer endpoint bug while handling a frame")
                    self._error(ErrorCode.INTERNAL, "internal error while handling the frame", None, ref)
        finally:
            self._release()

    def _release(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        if self._sending is not None:
            self._sending.cancel()
        off(self.channel, "message", self._on_message)
        off(self.channel, "close", self._on_close)
        self._writer.detach()

    def _error(self, code: str, message: str, name: str | None = None, ref: str | None = None) -> None:
        self.stats.errors_sent += 1
        self._send(Error(code=code, message=message, name=name, ref=ref))

    def _send(self, frame: Frame) -> None:
        """Send a control frame if the channel is still open; never raises."""
        if not self._writer.is_open:
            return
        try:
            self._writer.send_frame(frame)
        except Exception:
            log.exception("could not send %r frame", frame.TYPE)

    async def _on_text(self, text: str) -> None:
        frame = parse_frame(text)
        try:
            if isinstance(frame, Put):
                await self._on_put(frame)
            elif isinstance(frame, End):
                await self._on_end(frame)
            elif isinstance(frame, Commit):
                await self._on_commit()
            elif isinstance(frame, FetchResults):
                self._on_fetch()
            else:
                raise ProtocolError(
                    f"frame type {frame.TYPE!r} is not accepted by the worker", ErrorCode.UNEXPECTED
                )
        except ProtocolError as exc:
            self._error(exc.code, str(exc), exc.name or getattr(frame, "name", None), frame.TYPE)

    # --- upload -------------------------------------------------------------------------------------
    def _used_bytes(self, exclude_name: str, exclude_sha: str) -> int:
        used = 0
        for directory, skip in ((self.inputs_dir, exclude_name), (self.partial_dir, f"{exclude_sha}.part")):
            if directory.is_dir():
                for entry in os.scandir(directory):
                    if entry.name != skip and entry.is_file(follow_symlinks=False):
                        used += entry.stat(follow_symlinks=False).st_size
        return used

    async def _on_put(self, put: Put) -> None:
        if self.committed:
            raise ProtocolError("inputs are already committed", ErrorCode.COMMITTED)
        check_name(put.name)
        self._abandon_upload()  # a new put abandons an open upload; its partial stays resumable
        ensure_real_dir(self.job_dir)
        inputs = ensure_real_dir(self.inputs_dir)
        target = safe_target(inputs, put.name)
        used = self._used_bytes(put.name, put.sha256)
        if used + put.size > self.max_upload_bytes:
            raise ProtocolError(
                f"{put.name!r} ({put.size} bytes) exceeds the job upload limit "
                f"({used} of {self.max_upload_bytes} bytes used)",
                ErrorCode.TOO_LARGE,
            )
        partial = ensure_real_dir(self.partial_dir) / f"{put.sha256}.part"
        if await asyncio.to_thread(self.store.materialize, put.sha256, put.size, target):
            partial.unlink(missing_ok=True)
            self.stats.files_deduped += 1
            self.stats.bytes_skipped += put.size
            self._send(Have(name=put.name, size=put.size, sha256=put.sha256))
            return
        offset = 0 if put.restart else (regular_file_size(partial) or 0)
        if offset > put.size:
            offset = 0
        hasher = await asyncio.to_thread(sha256_of, partial, offset) if offset else None
        self._sink = FileSink(partial, put.name, put.size, put.sha256, offset, hasher)
        self._target = target
        if offset:
            self.stats.files_resumed += 1
            self.stats.bytes_skipped += offset
        prefix = hasher.hexdigest() if hasher is not None else None
        self._send(Ready(name=put.name, offset=offset, prefix_sha256=prefix))

    def _abandon_upload(self) -> None:
        if self._sink is not None:
            self._sink.close()
        self._sink = self._target = None

    def _on_chunk(self, data: bytes) -> None:
        sink = self._sink
        if sink is None:
            self.stats.chunks_dropped += 1
            if self._stray_chunk_reported:
                return  # one error per run of stray chunks, not one per chunk
            self._stray_chunk_reported = True
            raise ProtocolError("binary chunk without an upload in progress", ErrorCode.UNEXPECTED)
        try:
            sink.write(data)
        except OSError:
            self._abandon_upload()  # e.g. disk full: stop this upload, keep its partial
            raise
        self.stats.chunk_bytes_received += len(data)
        self.stats.chunks_received += 1
        if self.on_progress is not None:
            self.on_progress(sink.name, sink.done, sink.size)

    async def _on_end(self, end: End) -> None:
        sink, target = self._sink, self._target
        if sink is None or target is None or end.name != sink.name:
            raise ProtocolError(f"end of {end.name!r} without its upload in progress", ErrorCode.UNEXPECTED)
        self._sink = self._target = None
        sink.finish()  # raises SIZE_MISMATCH / HASH_MISMATCH; the upload state is reset either way
        target = safe_target(ensure_real_dir(self.inputs_dir), sink.name)
        os.replace(sink.part_path, target)
        self.stats.files_received += 1
        self._send(Ack(name=sink.name, size=sink.size, sha256=sink.sha256))
        try:
            await asyncio.to_thread(self.store.add, target, sink.sha256)
        except OSError as exc:
            log.warning("content store: could not add %s: %s", sink.sha256, exc)

    # --- commit -------------------------------------------------------------------------------------
    async def _on_commit(self) -> None:
        if self.committed:
            raise ProtocolError("inputs are already committed", ErrorCode.COMMITTED)
        if self._sink is not None:
            raise ProtocolError(f"upload of {self._sink.name!r} is still in progress", ErrorCode.BUSY)
        inputs = ensure_real_dir(self.inputs_dir)
        paths = sorted(p for p in inputs.iterdir() if regular_file_size(p) is not None)
        try:
            self.on_commit(paths)
        except Exception as exc:
            raise ProtocolError(f"commit refused: {exc}", ErrorCode.COMMIT_FAILED) from exc
        self.committed = True
        with contextlib.suppress(OSError):
            await asyncio.to_thread(shutil.rmtree, self.partial_dir)
        self._send(Committed(files=[p.name for p in paths]))

    # --- results ------------------------------------------------------------------------------------
    def _on_fetch(self) -> None:
        if self._sending is not None and not self._sending.done():
            raise ProtocolError("results are already being sent", ErrorCode.BUSY)
        try:
            paths = self.results()
        except Exception as exc:
            raise ProtocolError(f"results unavailable: {exc}", ErrorCode.NOT_READY) from exc
        if paths is None:
            raise ProtocolError("results are not ready", ErrorCode.NOT_READY)
        files: list[tuple[Path, int]] = []
        for path in paths:
            size = regular_file_size(path)
            if size is None:
                raise ProtocolError(f"result {path.name!r} is not a regular file", ErrorCode.IO_ERROR)
            files.append((path, size))
        self._sending = asyncio.get_running_loop().create_task(self._send_results(files))

    async def _send_results(self, files: list[tuple[Path, int]]) -> None:
        writer = self._writer
        try:
            self._send(Results(count=len(files), total_size=sum(size for _, size in files)))
            for path, size in files:
                digest = (await asyncio.to_thread(sha256_of, path)).hexdigest()
                self._send(FileHeader(name=check_name(path.name), size=size, sha256=digest))
                before = writer.chunk_bytes_sent
                await writer.send_file(path, 0, size)
                self.stats.chunk_bytes_sent += writer.chunk_bytes_sent - before
                self.stats.chunks_sent = writer.chunks_sent
                self._send(End(name=path.name))
                self.stats.files_sent += 1
            self._send(ResultsDone(count=len(files)))
        except TransferError as exc:
            log.info("sending results stopped: %s", exc)
        except (OSError, ProtocolError) as exc:
            log.warning("sending results failed: %s", exc)
            self._error(ErrorCode.IO_ERROR, f"could not send results: {exc}", ref=FetchResults.TYPE)
