"""Client side of the transfer protocol: upload inputs, commit, download results."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TypeVar

import attrs

from fsm_worker.protocol.transfer.download import (
    DownloadLimits,
)
from fsm_worker.protocol.transfer.frames import (
    CHUNK_REF,
    MAX_CONTROL_FRAME,
    Ack,
    Commit,
    Committed,
    End,
    Error,
    FetchResults,
    FileHeader,
    Frame,
    Have,
    Held,
    Manifest,
    Partial,
    Proof,
    Prove,
    Put,
    Ready,
    Results,
    ResultsDone,
    Same,
    encode_frame,
    parse_frame,
)
from fsm_worker.protocol.transfer.stats import TransferStats
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
from fsm_worker.shells.transfer.names import check_name

log = logging.getLogger(__name__)


DEFAULT_REPLY_TIMEOUT = 60.0
_CLOSED = object()
_F = TypeVar("_F", bound=Frame)


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


class _ErrorArrived(Exception):
    """Internal: the worker reported an error while we were streaming chunks."""


class ClientTransferEndpoint:
    """Drives the transfer protocol over one open data channel; one operation at a time.

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
        self._writer = ChannelWriter(channel, tuning or TransferTuning())
        self._replies: asyncio.Queue[Frame | FrameError | object] = asyncio.Queue()
        self._download: DownloadShell | None = None
        self._lock = asyncio.Lock()
        channel.on("message", self._on_message)
        channel.on("close", self._on_close)
        if channel.readyState in ("closing", "closed"):
            self._on_close()

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
                self._replies.put_nowait(exc)
            return
        download_frames = (Results, Manifest, FileHeader, Same, End, ResultsDone, Error)
        if self._download is not None and isinstance(frame, download_frames):
            self._download.on_frame(frame)
        else:
            self._replies.put_nowait(frame)

    def _on_close(self) -> None:
        self._replies.put_nowait(_CLOSED)
        if self._download is not None:
            self._download.fail(ChannelClosedError("data channel closed during download"))

    # --- replies ------------------------------------------------------------------------------------
    async def _reply(self, skip_chunk_errors: bool) -> Frame:
        try:
            async with asyncio.timeout(self.reply_timeout):
                item = await self._replies.get()
                while skip_chunk_errors and isinstance(item, Error) and item.ref == CHUNK_REF:
                    log.info("ignoring a stale chunk error: %s", item.message)  # from an abandoned upload
                    item = await self._replies.get()
        except TimeoutError as exc:
            raise TransferError(FrameCode.TIMEOUT, f"no reply within {self.reply_timeout:g} s") from exc
        if item is _CLOSED:
            self._replies.put_nowait(_CLOSED)  # every later wait fails too
            raise ChannelClosedError("data channel closed while waiting for the worker")
        if isinstance(item, FrameError):
            raise TransferError(item.code, f"bad frame from the worker: {item}")
        if isinstance(item, Error):
            raise RemoteTransferError(item.code, item.message, item.name)
        assert not isinstance(item, FrameError)
        return item  # type: ignore[return-value]

    async def _expect(self, *kinds: type[_F], skip_chunk_errors: bool = True) -> _F:
        """The next reply, which must be one of ``kinds``; an ``error`` frame raises."""
        frame = await self._reply(skip_chunk_errors)
        if not isinstance(frame, kinds):
            raise TransferError(FrameCode.UNEXPECTED, f"unexpected {frame.TYPE!r} frame from the worker")
        return frame

    # --- upload -------------------------------------------------------------------------------------
    async def upload(
        self, paths: Sequence[Path], on_progress: ProgressFn | None = None
    ) -> list[UploadedFile]:
        """Upload files (named by their base name); returns them as acknowledged by the worker."""
        names = [check_name(Path(p).name) for p in paths]
        if len(set(names)) != len(names):
            raise ValueError("upload: file names must be unique")
        async with self._lock:
            infos = [await asyncio.to_thread(_describe, Path(p)) for p in paths]
            total = sum(size for size, _ in infos)
            done = 0
            last = -1
            uploaded: list[UploadedFile] = []
            for path, name, (size, digest) in zip(paths, names, infos, strict=True):

                def progress(file_done: int, base: int = done) -> None:
                    nonlocal last
                    if on_progress is not None and base + file_done != last:
                        last = base + file_done
                        on_progress(last, total)

                uploaded.append(await self._upload_one(Path(path), name, size, digest, progress))
                progress(size)
                done += size
            return uploaded

    async def _upload_one(
        self, path: Path, name: str, size: int, digest: str, progress: Callable[[int], None]
    ) -> UploadedFile:
        reply = await self._announce(path, Put(name=name, size=size, sha256=digest))
        if isinstance(reply, Ready) and reply.offset and not await self._prefix_matches(path, reply):
            reply = await self._announce(path, Put(name=name, size=size, sha256=digest, restart=True))
        if isinstance(reply, Have):
            self.stats.files_deduped += 1
            self.stats.bytes_skipped += size
            progress(size)
            return UploadedFile(name, size, digest, UploadStatus.DEDUPED, 0)
        offset = reply.offset
        if offset:
            self.stats.files_resumed += 1
            self.stats.bytes_skipped += offset

        def on_chunk(file_done: int) -> None:
            progress(file_done)
            if not self._replies.empty():
                raise _ErrorArrived

        before = self._writer.chunk_bytes_sent
        with contextlib.suppress(_ErrorArrived):
            await self._writer.send_file(path, offset, size, on_chunk)
            self._writer.send_frame(End(name=name))
        sent = self._writer.chunk_bytes_sent - before
        self.stats.chunk_bytes_sent += sent
        self.stats.chunks_sent = self._writer.chunks_sent
        ack = await self._expect(Ack, skip_chunk_errors=False)
        if (ack.name, ack.size, ack.sha256) != (name, size, digest):
            raise TransferError(
                FrameCode.UNEXPECTED, f"acknowledgement for {ack.name!r} does not match {name!r}"
            )
        self.stats.files_sent += 1
        return UploadedFile(name, size, digest, UploadStatus.RESUMED if offset else UploadStatus.SENT, sent)

    async def _announce(self, path: Path, put: Put) -> Ready | Have:
        """Send ``put``; answer a ``prove`` challenge with the proof that we hold the bytes."""
        self._writer.send_frame(put)
        reply: Ready | Have | Prove = await self._expect(Ready, Have, Prove)
        if not isinstance(reply, Prove):
            return reply
        proof = await asyncio.to_thread(proof_of_possession, path, reply.nonce)
        self._writer.send_frame(Proof(name=put.name, sha256=proof))
        return await self._expect(Ready, Have)

    async def _prefix_matches(self, path: Path, ready: Ready) -> bool:
        prefix = await asyncio.to_thread(sha256_of, path, ready.offset)
        return prefix.hexdigest() == ready.prefix_sha256

    # --- commit / download --------------------------------------------------------------------------
    async def commit(self) -> list[str]:
        """Tell the worker the inputs are complete; returns the input names it committed."""
        async with self._lock:
            self._writer.send_frame(Commit())
            committed = await self._expect(Committed)
            return committed.files

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
                staging, self.download_limits, on_progress, self.stats, held, part
            )
            loop = asyncio.get_running_loop()
            published = False
            interrupted: PartialDownload | None = None
            try:
                have = [Held(name, size, sha256) for name, (size, sha256) in held.items()]
                self._writer.send_frame(FetchResults(have=have, resume=partial))
                async with asyncio.timeout(self.reply_timeout) as idle:
                    # an idle timeout: every frame or chunk from the worker re-arms it
                    download.activity = lambda: idle.reschedule(loop.time() + self.reply_timeout)
                    names = await download.future
                kept = tuple(name for name in download.core.kept if name not in staged)
                paths = await asyncio.to_thread(
                    destination.publish, staging, final, names, per_job=job_id is not None, kept=kept
                )
                published = True
                return paths
            except TimeoutError as exc:
                raise TransferError(
                    FrameCode.TIMEOUT, f"download stalled for {self.reply_timeout:g} s"
                ) from exc
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


def _describe(path: Path) -> tuple[int, str]:
    size = path.stat().st_size
    return size, sha256_of(path).hexdigest()
