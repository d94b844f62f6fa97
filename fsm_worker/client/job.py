"""`Job`: the IO shell around one job's client core (sends, timers, the data channel, the transfers).

Every decision about the protocol is the core's (`fsm_worker.protocol.client`): this module feeds it events
(messages, send reports, timers, the user's calls) and carries out its instructions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import attrs
from aiortc import RTCPeerConnection

from fsm_worker.client.channel_ops import over_channels
from fsm_worker.client.job_channel import JobChannel
from fsm_worker.client.job_results import JobOutcome, ProgressFn, ResultDownloads
from fsm_worker.client.outbox import Outbox, SendFn
from fsm_worker.protocol.client import channel_retry as retry
from fsm_worker.protocol.client.errors import (
    ClientTimeoutError,
    JobCancelledError,
    JobFailedError,
    WorkerGoneError,
)
from fsm_worker.protocol.client.events import (
    Abandoned,
    Attached,
    BiddingOpened,
    CancelRequested,
    ChannelLost,
    ClientJobState,
    ClientTimeouts,
    ControlReply,
    Deliver,
    Event,
    Fail,
    MessageReceived,
    OfferReady,
    Outcome,
    QueueUpdate,
    Reconnected,
    Refused,
    Send,
    StopRequested,
    TimerFired,
    WorkerChosen,
)
from fsm_worker.protocol.client.job import ClientJobCore
from fsm_worker.protocol.messages import (
    JobComplete,
    JobEvent,
    JobFailed,
    JobRequest,
    Message,
    Metrics,
)
from fsm_worker.protocol.transfer.download import DownloadLimits
from fsm_worker.shells.rtc.options import RtcOptions
from fsm_worker.shells.transfer.client import (
    ClientTransferEndpoint,
    UploadedFile,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


@attrs.frozen
class JobLink:
    """What a job needs from its client: a way to send, the settings, and a way to be forgotten."""

    send: SendFn
    timeouts: ClientTimeouts
    rtc_options: RtcOptions
    forget: Callable[[str], None]
    download_limits: DownloadLimits = attrs.field(factory=DownloadLimits)


class Job:
    """One submitted job: its events, its data channel, its results."""

    def __init__(
        self, link: JobLink, request: JobRequest, phases: dict[str, float], job_key: str | None
    ) -> None:
        self._link = link
        self._core = ClientJobCore(request, job_key, link.timeouts)
        self.phases = phases
        self._outbox = Outbox(link.send, self._feed)
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._settled = asyncio.Event()  # bidding is over (won or failed)
        self._events: asyncio.Queue[JobEvent | None] = asyncio.Queue()  # None: the job is lost
        self._control: asyncio.Queue[Message] = asyncio.Queue()
        self._channel = JobChannel(link.rtc_options, link.timeouts, link.download_limits)
        self._downloads = ResultDownloads()
        self.uploaded: list[UploadedFile] = []

    # --- what the core knows -----------------------------------------------------------------------------

    @property
    def job_id(self) -> str:
        return self._core.job_id

    @property
    def request(self) -> JobRequest:
        return self._core.request

    @property
    def job_key(self) -> str | None:
        """The job's secret: keep it (with the job and worker ids) to `attach` to the job later."""
        return self._core.job_key

    @property
    def worker_id(self) -> str | None:
        return self._core.worker

    @property
    def last_seq(self) -> int:
        return self._core.last_seq

    @property
    def finished(self) -> bool:
        return self._core.finished

    @property
    def terminal(self) -> JobEvent | None:
        return self._core.terminal

    @property
    def history(self) -> list[JobEvent]:
        return self._core.history

    @property
    def outcome(self) -> Outcome:
        return self._core.outcome

    @property
    def metrics(self) -> Metrics | None:
        """The latest training numbers the worker reported (None until it reports some)."""
        return self._core.metrics

    @property
    def stopped_early(self) -> bool:
        return self._core.outcome is Outcome.STOPPED_EARLY

    @property
    def queued(self) -> bool:
        """True while the job waits in its worker's queue for a slot (issue 12)."""
        return self._core.queued

    @property
    def queue_position(self) -> int | None:
        """The job's 1-based place in its worker's queue while `queued` (as the worker last reported it)."""
        return self._core.queue_position

    @property
    def estimated_start_seconds(self) -> float | None:
        """While `queued`: the worker's estimate of the wait (from when it reported it), or None."""
        return self._core.estimated_start_seconds

    # --- feeding the core ----------------------------------------------------------------------------------

    def deliver(self, sender: str, message: Message) -> None:
        """One incoming message about this job."""
        self._feed(MessageReceived(sender, message))

    def reconnected(self) -> None:
        """The signaling link is back."""
        self._feed(Reconnected())

    def attach(self, worker_id: str) -> None:
        self._feed(Attached(worker_id))

    def _feed(self, event: Event) -> None:
        loop = asyncio.get_running_loop()
        for instruction in self._core.handle(event, loop.time()):
            match instruction:
                case Send(to=to, message=message):
                    self._outbox.send(to, message)
                case Deliver(event=job_event):
                    self._events.put_nowait(job_event)
                case QueueUpdate(status=queued):
                    self._events.put_nowait(queued)
                case ControlReply(message=message):
                    self._control.put_nowait(message)
                case WorkerChosen():
                    self._settled.set()
                case ChannelLost():
                    self._channel.drop(self.job_id, self.worker_id)
                case Fail():
                    self._events.put_nowait(None)
                    self._settled.set()
                case Refused(reason=reason):
                    log.debug("job %s: %s", self.job_id, reason)
        self._arm_timer(loop)

    def _arm_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        deadline = None if self._closed else self._core.next_deadline()
        if self._timer is not None and (deadline is None or self._timer.when() != deadline):
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._timer is None:
            self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._feed(TimerFired())

    # --- submission steps ---------------------------------------------------------------------------------

    async def reserve(self, workers: Sequence[str], bid_window: float) -> None:
        """Bid for the job; returns once a worker holds it (raises `AllRejectedError` when none will)."""
        self._feed(BiddingOpened(tuple(workers), bid_window))
        await self._settled.wait()
        if self._core.error is not None:
            raise self._core.error

    async def open_channel(self) -> None:
        """Offer a data channel to the worker and wait until it is open (replacing any earlier one)."""
        await self._channel.open(self)

    def offer_ready(self, sdp: str, options: dict[str, object]) -> None:
        """The channel's SDP offer is made: the core sends it."""
        self._feed(OfferReady(sdp, options))

    @property
    def _pc(self) -> RTCPeerConnection | None:
        """The data channel's peer connection (None: no channel)."""
        return self._channel.pc

    async def upload(self, inputs: Sequence[Path], on_progress: ProgressFn | None = None) -> None:
        """Upload the inputs and commit them: the worker starts the run.

        If the data channel drops, a new one is opened and the upload resumes from what the worker verified.
        """
        paths = [Path(path) for path in inputs]

        async def upload_and_commit(transfer: ClientTransferEndpoint) -> None:
            self.uploaded = await transfer.upload(paths, on_progress)
            await transfer.commit()

        await self._over_channel("upload", upload_and_commit)

    async def _over_channel(
        self, what: retry.Operation, operation: Callable[[ClientTransferEndpoint], Awaitable[T]]
    ) -> T | None:
        """Run a transfer over the job's data channel, over a new one when it drops, as the retry core says."""
        return await over_channels(self, what, self._link.timeouts.channel_retries, operation)

    def open_transfer(self) -> ClientTransferEndpoint | None:
        """The transfer endpoint of the job's data channel while that channel is open."""
        return self._channel.open_transfer()

    async def next_control(self, kinds: tuple[type[Message], ...], timeout: float) -> Message:
        """The next control reply of one of ``kinds`` (others are passed over); `ClientTimeoutError` after
        ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await self._control.get()
                    if isinstance(message, kinds):
                        return message
        except TimeoutError:
            names = ", ".join(kind.TYPE for kind in kinds)
            raise ClientTimeoutError(
                f"no {names} from worker {self.worker_id} within {timeout:g} s"
            ) from None

    # --- following the job --------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[JobEvent]:
        """The job's events in order (`job_status`…, then the terminal one); raises `WorkerGoneError` when
        the worker is gone or forgot the job (the core probes a silent worker with `job_sync`). While the job is
        queued, `job_status` "queued" (no `seq`; it may repeat) reports its place as it changes."""
        while not (self.finished and self._events.empty()):
            if self._core.error is not None and self._events.empty():
                raise self._lost()
            event = await self._events.get()
            if event is None:
                raise self._lost()
            yield event
            if event is self.terminal:
                return

    def _lost(self) -> Exception:
        return self._core.error or WorkerGoneError(f"worker {self.worker_id} lost job {self.job_id}")

    async def wait(self) -> JobEvent:
        """Follow the job to its terminal event and return it."""
        async for _ in self.events():
            pass
        assert self.terminal is not None
        return self.terminal

    async def result(
        self, out_dir: Path, on_download: ProgressFn | None = None, *, job_folder: bool = False
    ) -> JobOutcome:
        """Wait for completion, download the result files into `out_dir` (with `job_folder`: into a folder
        `out_dir/<job_id>` of their own), and describe the outcome."""
        terminal = await self.wait()
        if isinstance(terminal, JobFailed):
            raise JobFailedError(terminal.error.code, terminal.error.message, terminal.error.recoverable)
        if not isinstance(terminal, JobComplete):
            raise JobCancelledError(f"job {self.job_id} was cancelled")
        mark = time.perf_counter()
        files = await self.download(out_dir, on_download, job_folder=job_folder)
        self.phases["download"] = time.perf_counter() - mark
        await self.close_channel()
        return JobOutcome(
            self.job_id,
            self.worker_id or "",
            tuple(files),
            terminal.result.training_duration_minutes,
            terminal.result.model_size_mb,
            dict(self.phases),
            stopped_early=self.stopped_early,
        )

    async def download(
        self, out_dir: Path, on_progress: ProgressFn | None = None, *, job_folder: bool = False
    ) -> list[Path]:
        """Fetch the job's result files; reopens the data channel when it has dropped (before or during,
        at most ``channel_retries`` times), resuming from the verified offset of the file in flight.

        With ``job_folder`` they land in a folder ``out_dir/<job_id>`` of their own (what the CLI does: a
        rogue worker's results never mix with the user's files). A repeat download into the same folder is
        free for what is unchanged: the results received there before are offered by content (size,
        sha256) and the worker does not send them again."""
        return await self._downloads.fetch(
            out_dir,
            on_progress,
            lambda fetch: self._over_channel("download", fetch),
            job_id=self.job_id if job_folder else None,
        )

    async def cancel(self) -> None:
        """Ask the worker to cancel the job and wait for its acknowledgement (a queued job leaves the queue)."""
        if self._core.state is not ClientJobState.ASSIGNED:
            return
        self._feed(CancelRequested())
        timeout = self._link.timeouts.cancel
        try:
            async with asyncio.timeout(timeout):
                terminal = await self.wait()
        except TimeoutError:
            raise ClientTimeoutError(f"job {self.job_id}: no job_cancelled within {timeout:g} s") from None
        if self._core.outcome is not Outcome.CANCELLED:
            log.info("job %s ended before the cancel took effect: %s", self.job_id, terminal.TYPE)

    async def stop(self) -> None:
        """Ask the worker to stop the run early and keep its outputs (`job_stop`); follow `events()` or
        `result()` for the end (`stopped_early` on `job_complete`)."""
        if self._core.state is ClientJobState.ASSIGNED:
            self._feed(StopRequested())
            await self._outbox.flush()

    async def abandon(self) -> None:
        """Give the job up after a failed submission: release the worker(s), close the channel."""
        self._feed(Abandoned())
        with contextlib.suppress(Exception):
            await self._outbox.flush()
        await self.close()
        self._link.forget(self.job_id)

    async def close(self) -> None:
        """Stop the job's timer and close its data channel."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.close_channel()

    async def close_channel(self) -> None:
        await self._channel.close()
