"""Client side of the transfer protocol over one data channel: routes its frames to the upload or the download."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from pathlib import Path

from fsm_worker.protocol.transfer.download import DownloadLimits
from fsm_worker.protocol.transfer.frames import (
    End,
    Error,
    FileHeader,
    Manifest,
    Results,
    ResultsDone,
    Same,
    parse_frame,
)
from fsm_worker.protocol.transfer.stats import TransferStats
from fsm_worker.protocol.transfer.uploader import DEFAULT_REPLY_TIMEOUT, UploadSender, check_upload_names
from fsm_worker.protocol.transfer.uploader_steps import (
    BadFrameIn,
    ChannelClosed,
    FrameIn,
    UploadedFile,
    UploadStatus,
)
from fsm_worker.shells.transfer.download import ProgressFn
from fsm_worker.shells.transfer.errors import ChannelClosedError, FrameError
from fsm_worker.shells.transfer.flow import ChannelWriter, DataChannel, TransferTuning, off
from fsm_worker.shells.transfer.results import PartialDownload, ResultsDownloader
from fsm_worker.shells.transfer.upload import UploadShell

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_REPLY_TIMEOUT",
    "ClientTransferEndpoint",
    "UploadStatus",
    "UploadedFile",
]

_DOWNLOAD_FRAMES = (Results, Manifest, FileHeader, Same, End, ResultsDone, Error)


class ClientTransferEndpoint:
    """Drives the transfer protocol over one open data channel; one operation at a time.

    Uploads and commits are decided by the pure :class:`UploadSender` core, fed by :class:`UploadShell`
    (``upload.py``); a download is :class:`ResultsDownloader` (``results.py``). This endpoint listens to
    the channel and routes each frame, chunk and the close to the one that waits for it.
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
        self.reply_timeout = reply_timeout
        self.stats = TransferStats()
        self._writer = ChannelWriter(channel, tuning or TransferTuning())
        self._upload = UploadShell(self._writer, reply_timeout, self.stats)
        self._results = ResultsDownloader(
            self._writer, download_limits or DownloadLimits(), self.stats, reply_timeout
        )
        self._lock = asyncio.Lock()
        channel.on("message", self._on_message)
        channel.on("close", self._on_close)
        if channel.readyState in ("closing", "closed"):
            self._on_close()

    @property
    def uploader(self) -> UploadSender:
        """The upload's pure core."""
        return self._upload.core

    @property
    def download_limits(self) -> DownloadLimits:
        return self._results.limits

    def close(self) -> None:
        """Stop listening to the channel (the channel itself is left to its owner)."""
        off(self.channel, "message", self._on_message)
        off(self.channel, "close", self._on_close)
        self._writer.detach()
        self._on_close()

    # --- channel events (sync) ----------------------------------------------------------------------
    def _on_message(self, message: str | bytes) -> None:
        download = self._results.current
        if isinstance(message, bytes):
            if download is not None and not download.future.done():
                download.on_chunk(message)
            else:
                log.warning("ignoring a %d-byte chunk outside a download", len(message))
            return
        try:
            frame = parse_frame(message)
        except FrameError as exc:
            if download is not None:
                download.on_bad_frame(exc)
            else:
                self._upload.feed(BadFrameIn(exc))
            return
        if download is not None and isinstance(frame, _DOWNLOAD_FRAMES):
            download.on_frame(frame)
        else:
            self._upload.feed(FrameIn(frame))

    def _on_close(self) -> None:
        self._upload.feed(ChannelClosed())
        if self._results.current is not None:
            self._results.current.fail(ChannelClosedError("data channel closed during download"))

    # --- operations ---------------------------------------------------------------------------------
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
            return await self._upload.upload(names, paths, on_progress)

    async def commit(self) -> list[str]:
        """Tell the worker the inputs are complete; returns the input names it committed."""
        async with self._lock:
            return await self._upload.commit()

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
            return await self._results.download(dest_dir, on_progress, job_id, keep_partial, resume, expect)
