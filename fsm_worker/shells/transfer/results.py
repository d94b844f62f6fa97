"""The client's download of a job's results into a folder: files already held, resume, publish or discard."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Collection
from pathlib import Path

import attrs

from fsm_worker.protocol.transfer.download import DownloadLimits
from fsm_worker.protocol.transfer.frames import MAX_CONTROL_FRAME, FetchResults, Held, Partial, encode_frame
from fsm_worker.protocol.transfer.stats import TransferStats
from fsm_worker.shells.transfer import destination
from fsm_worker.shells.transfer.download import DownloadShell, ProgressFn
from fsm_worker.shells.transfer.errors import ChannelClosedError
from fsm_worker.shells.transfer.files import sha256_of
from fsm_worker.shells.transfer.flow import ChannelWriter


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


class ResultsDownloader:
    """Runs one ``fetch_results`` at a time; ``current`` is the :class:`DownloadShell` the frames go to."""

    def __init__(
        self, writer: ChannelWriter, limits: DownloadLimits, stats: TransferStats, reply_timeout: float
    ) -> None:
        self._writer = writer
        self.limits = limits
        self._stats = stats
        self._reply_timeout = reply_timeout
        self.current: DownloadShell | None = None

    async def download(
        self,
        dest_dir: Path,
        on_progress: ProgressFn | None,
        job_id: str | None,
        keep_partial: bool,
        resume: PartialDownload | None,
        expect: Collection[str],
    ) -> list[Path]:
        """:meth:`ClientTransferEndpoint.download <fsm_worker.shells.transfer.client.ClientTransferEndpoint.download>`."""
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
            held = _fitting(await asyncio.to_thread(destination.held, final, self.limits.max_files))
        elif expect:
            limit = self.limits.max_files
            held = _fitting(await asyncio.to_thread(destination.held_named, final, expect, limit))
        staged = dict(resume.received) if resume is not None else {}
        held.update(staged)
        download = self.current = DownloadShell(
            staging, self.limits, on_progress, self._stats, held, part, self._reply_timeout
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
            self.current = None
            if not published and interrupted is None:
                await asyncio.to_thread(destination.discard, staging)


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
