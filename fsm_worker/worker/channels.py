"""The data channels of the worker's jobs: one peer connection and transfer endpoint per job, and its files.

Carries out the core's `AcceptOffer`, `PublishResults`, `CloseChannel` and `CleanupJob`, and reports what
became of each (`ChannelAnswered`, then `ChannelOpened` or `ChannelFailed`; `InputsReady` when the client
commits its inputs; `JobFilesRemoved`). Decides nothing: which offer to answer, and what to tell the client,
is the core's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from aiortc import RTCDataChannel, RTCPeerConnection

from fsm_worker.protocol.transfer.stats import TransferStats
from fsm_worker.protocol.transfer.store_policy import DEFAULT_STORE_QUOTA_BYTES, DEFAULT_STORE_RETENTION
from fsm_worker.protocol.worker.events import (
    ChannelAnswered,
    ChannelClosed,
    ChannelFailed,
    ChannelOpened,
    Event,
    InputsReady,
    InputsStarted,
    JobFilesRemoved,
)
from fsm_worker.protocol.worker.instructions import AcceptOffer
from fsm_worker.shells.rtc import tuning
from fsm_worker.shells.rtc.options import RtcOptions
from fsm_worker.shells.rtc.peer import create_peer_connection
from fsm_worker.shells.rtc.session import IncomingChannel, RtcSetupError, create_answer
from fsm_worker.shells.transfer.flow import TransferTuning
from fsm_worker.shells.transfer.store import ContentStore
from fsm_worker.shells.transfer.worker import WorkerTransferEndpoint

log = logging.getLogger(__name__)


class JobChannels:
    """Peer connections and transfer endpoints by job id, and the jobs' work directories under `workdir`."""

    def __init__(
        self,
        workdir: Path,
        feed: Callable[[Event], None],
        *,
        rtc_options: RtcOptions,
        setup_timeout: float = 15.0,
        max_upload_bytes: int,
        max_input_files: int = 1000,
        store_retention: float = DEFAULT_STORE_RETENTION,
        store_quota_bytes: int = DEFAULT_STORE_QUOTA_BYTES,
    ) -> None:
        self.workdir = workdir
        self.store = ContentStore(workdir / "store", retention=store_retention, quota_bytes=store_quota_bytes)
        self._feed = feed
        self._rtc = rtc_options
        self._setup_timeout = setup_timeout
        self._max_upload_bytes = max_upload_bytes
        self._max_input_files = max_input_files
        self._peers: dict[str, tuple[RTCPeerConnection, WorkerTransferEndpoint | None]] = {}
        self._published: set[str] = set()
        #: Told the statistics of each transfer endpoint that closes (the worker's metrics).
        self.on_transfer_closed: Callable[[TransferStats | None], None] = lambda stats: None

    def live_stats(self) -> list[TransferStats]:
        """The statistics of the transfer endpoints open now."""
        return [endpoint.stats for _, endpoint in self._peers.values() if endpoint is not None]

    def job_dir(self, job_id: str) -> Path:
        """The job's work directory (named by a hash: a job id is never used as a path)."""
        return self.workdir / "jobs" / hashlib.sha256(job_id.encode()).hexdigest()[:32]

    async def open(self, offer: AcceptOffer) -> Event:
        """Answer `offer` on a new peer connection (replacing the job's old one); the channel's fate."""
        job_id = offer.job_id
        await self.close(job_id)
        if offer.results_ready:
            self._published.add(job_id)
        job_dir = self.job_dir(job_id)
        await asyncio.to_thread(job_dir.mkdir, parents=True, exist_ok=True)
        pc = create_peer_connection(self._rtc)
        self._peers[job_id] = (pc, None)
        # The fast path applies only when both ends offer it; it must be in place before the answer leaves.
        profile = tuning.negotiate(self._rtc, offer.options.get(tuning.CAPABILITY_KEY))
        window = tuning.transfer_window(profile)

        def serve(channel: RTCDataChannel) -> None:
            """Attach the transfer endpoint inside the channel event, before its first message can arrive."""
            endpoint = WorkerTransferEndpoint(
                channel,
                job_dir,
                self.store,
                self._max_upload_bytes,
                max_input_files=self._max_input_files,
                on_commit=lambda paths: self._feed(InputsReady(job_id)),
                on_first_input=lambda: self._feed(InputsStarted(job_id)),
                results=lambda: self._results(job_id),
                committed=offer.inputs_committed,
                tuning=TransferTuning(**window),
            )
            self._peers[job_id] = (pc, endpoint)

        try:
            incoming = IncomingChannel(pc, on_channel=serve)
            answer = await create_answer(pc, offer.sdp, timeout=self._setup_timeout)
            tuning.apply_fast_path(pc, profile)
            self._feed(ChannelAnswered(job_id, offer.client_id, answer, tuning.capability_options(self._rtc)))
            await incoming.wait_open(timeout=self._setup_timeout)
        except RtcSetupError as error:
            return ChannelFailed(job_id, offer.client_id, str(error))
        return ChannelOpened(job_id)

    def connection(self, job_id: str) -> RTCPeerConnection | None:
        """The job's current peer connection, if any (for diagnostics and fault tests)."""
        return self._peers[job_id][0] if job_id in self._peers else None

    def publish(self, job_id: str) -> None:
        """The job's results are final: serve them from now on."""
        self._published.add(job_id)

    async def close(self, job_id: str) -> Event:
        pc, endpoint = self._peers.pop(job_id, (None, None))
        if endpoint is not None:
            self.on_transfer_closed(endpoint.stats)
            with contextlib.suppress(Exception):
                await endpoint.aclose()
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()
        return ChannelClosed(job_id)

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(job_id) for job_id in list(self._peers)))

    async def remove(self, job_id: str, *, reclaim: bool = False) -> Event:
        """Close the job's channel and delete its work directory (with `reclaim`, also what its uploads added to
        the content store); then collect the store (retention, quota)."""
        await self.close(job_id)
        self._published.discard(job_id)
        job_dir = self.job_dir(job_id)
        if reclaim:
            await asyncio.to_thread(self.store.reclaim_job, job_dir)
        await asyncio.to_thread(shutil.rmtree, job_dir, True)
        await asyncio.to_thread(self.store.collect)
        return JobFilesRemoved(job_id)

    async def prune(self, keep: tuple[str, ...]) -> None:
        """Delete every job directory under `workdir/jobs` but those of `keep` (left by an earlier process)."""
        jobs = self.workdir / "jobs"
        kept = {self.job_dir(job_id).name for job_id in keep}  # directories are named by hash
        for old in jobs.iterdir() if jobs.is_dir() else ():
            if old.name not in kept:
                await asyncio.to_thread(shutil.rmtree, old, True)
        jobs.mkdir(parents=True, exist_ok=True)

    def _results(self, job_id: str) -> list[Path] | None:
        """The job's result files once published, else None (not ready)."""
        if job_id not in self._published:
            return None
        outputs = self.job_dir(job_id) / "outputs"
        return sorted(path for path in outputs.rglob("*") if path.is_file()) if outputs.is_dir() else []
