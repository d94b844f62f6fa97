"""A finished job's results on the client: the outcome it reports and the download of its result files,
resumed over a new data channel when one drops and free for what a folder already holds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs

from fsm_worker.shells.transfer import destination
from fsm_worker.shells.transfer.client import ClientTransferEndpoint
from fsm_worker.shells.transfer.results import DownloadInterrupted, PartialDownload

ProgressFn = Callable[[int, int], None]
OverChannel = Callable[
    [Callable[[ClientTransferEndpoint], Awaitable[list[Path]]]], Awaitable[list[Path] | None]
]


@attrs.frozen
class JobOutcome:
    """A completed job: where its results are and what the worker reported."""

    job_id: str
    worker_id: str
    files: tuple[Path, ...]
    training_duration_minutes: float
    model_size_mb: float | None
    phases: dict[str, float]
    #: True when `Job.stop()` ended the run early (the outputs are what it had made so far).
    stopped_early: bool = False


class ResultDownloads:
    """The job's downloads: which result names each destination folder received (offered again by content)."""

    def __init__(self) -> None:
        self._received: dict[Path, tuple[str, ...]] = {}  # destination → the result names downloaded there

    async def fetch(
        self,
        out_dir: Path,
        on_progress: ProgressFn | None,
        over_channel: OverChannel,
        job_id: str | None = None,
    ) -> list[Path]:
        """Download into ``out_dir`` over the job's channel(s); a dropped attempt's partial file is resumed
        by the next one, and discarded when the last attempt drops too. With ``job_id`` the results land in
        a folder ``out_dir/<job_id>`` of their own (nothing offered by content: the folder is fresh)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        kept: list[PartialDownload] = []
        expect = () if job_id is not None else self._received.get(out_dir.resolve(), ())

        async def fetch(transfer: ClientTransferEndpoint) -> list[Path]:
            resume = kept.pop() if kept else None
            try:
                paths = await transfer.download(
                    out_dir, on_progress, keep_partial=True, resume=resume, expect=expect, job_id=job_id
                )
                if job_id is None:
                    names = tuple(path.relative_to(out_dir).as_posix() for path in paths)
                    self._received[out_dir.resolve()] = names
                return paths
            except DownloadInterrupted as interrupted:
                kept.append(interrupted.partial)
                raise

        try:
            files = await over_channel(fetch)
            assert files is not None  # a download finishes only with its files
            return files
        finally:
            for partial in kept:  # the last attempt dropped too: nothing is left behind
                await asyncio.to_thread(destination.discard, partial.staging)
