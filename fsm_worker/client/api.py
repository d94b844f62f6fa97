"""The client API: find workers, submit a job, follow it, fetch its results.

    async with JobClient(url, token) as client:
        job = await client.submit("train-demo", {"epochs": 20}, [Path("data.csv")])
        async for event in job.events():
            print(event)
        result = await job.result(Path("results"))

Every wait is bounded; failures raise the typed errors below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
from aiortc import RTCPeerConnection

from fsm_worker.protocol.messages import (
    AppError,
    JobAssignment,
    JobCancel,
    JobCancelled,
    JobComplete,
    JobEvent,
    JobFailed,
    JobRequest,
    JobResponse,
    JobResult,
    JobStatus,
    JobSync,
    Message,
    ProtocolError,
    Requirements,
    ReservationExpired,
    RtcAnswer,
    RtcOffer,
    UnknownMessage,
    parse_message,
    to_wire,
)
from fsm_worker.shells.rtc import tuning
from fsm_worker.shells.rtc.config import IceServerConfig
from fsm_worker.shells.rtc.options import RtcOptions
from fsm_worker.shells.rtc.peer import create_peer_connection, install_rtc_patches
from fsm_worker.shells.rtc.session import RtcSetupError, accept_answer, create_offer, wait_channel_open
from fsm_worker.shells.signaling import SignalingClient
from fsm_worker.shells.transfer.client import ClientTransferEndpoint, UploadedFile
from fsm_worker.shells.transfer.errors import ChannelClosedError, RemoteTransferError, TransferError
from fsm_worker.shells.transfer.errors import ErrorCode as TransferCode
from fsm_worker.shells.transfer.flow import TransferTuning

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
T = TypeVar("T")


# --- errors -----------------------------------------------------------------------------------------------------


class JobClientError(Exception):
    """Base of every error the client API raises."""


class NoWorkersError(JobClientError):
    """No worker matched the job's requirements."""


class AllRejectedError(JobClientError):
    """Every asked worker refused; `reasons` maps worker id → (reason, details)."""

    def __init__(self, reasons: Mapping[str, tuple[str, Sequence[str]]]) -> None:
        self.reasons = dict(reasons)
        lines = [
            f"{worker}: {reason}" + (f" ({'; '.join(details)})" if details else "")
            for worker, (reason, details) in sorted(self.reasons.items())
        ]
        super().__init__("every worker rejected the job:\n  " + "\n  ".join(lines))


class ReservationExpiredError(JobClientError):
    """The worker let the reservation go before it was assigned."""


class WorkerGoneError(JobClientError):
    """The worker disappeared from the signaling server while it held the job."""


class JobFailedError(JobClientError):
    """The job failed on the worker."""

    def __init__(self, code: str, message: str, recoverable: bool) -> None:
        super().__init__(f"{code}: {message}" + (" (recoverable)" if recoverable else ""))
        self.code, self.message, self.recoverable = code, message, recoverable


class JobCancelledError(JobClientError):
    """The job was cancelled (by this client) before it completed."""


class WorkerRefusedError(JobClientError):
    """The worker answered with an `app_error`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class ClientTimeoutError(JobClientError, TimeoutError):
    """A wait ran past its timeout."""


class DataChannelError(JobClientError):
    """The data channel could not be opened, or a transfer over it failed (`code` says why)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


# --- results ----------------------------------------------------------------------------------------------------


@attrs.frozen
class WorkerInfo:
    peer_id: str
    properties: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.properties.get("status", "unknown"))


@attrs.frozen
class JobOutcome:
    """A completed job: where its results are and what the worker reported."""

    job_id: str
    worker_id: str
    files: tuple[Path, ...]
    training_duration_minutes: float
    model_size_mb: float | None
    phases: dict[str, float]


@attrs.frozen
class ClientTimeouts:
    """Every wait of the client, in seconds."""

    connect: float = 10.0
    #: For the `job_response`s of one request (and, with a bid window, its end).
    response: float = 10.0
    rtc_setup: float = 20.0
    transfer_reply: float = 60.0
    cancel: float = 30.0
    #: With no job event for this long, ask the worker (`job_sync`) whether it is still there.
    liveness: float = 5.0
    #: How long a worker may be unreachable (reconnecting) before the job is declared lost.
    worker_gone: float = 15.0
    #: New data channels to try when one drops mid-transfer.
    channel_retries: int = 3


# --- the client ---------------------------------------------------------------------------------------------


class JobClient:
    """A connection to the signaling server, from which jobs are submitted."""

    def __init__(
        self,
        server_url: str,
        token: str,
        peer_id: str | None = None,
        *,
        ice_servers: Sequence[IceServerConfig] = (),
        timeouts: ClientTimeouts | None = None,
        loopback_only: bool = False,
        rtc_fast_path: str | None = None,
        trace: Callable[[str, str, Message], None] | None = None,
        resume_secret: str | None = None,
    ) -> None:
        """`loopback_only` makes 127.0.0.1 the only ICE host candidate (tests, the demo); `rtc_fast_path`
        (None/"auto": probe for larger SCTP packets when the worker can read them; "off": stock packets); `trace` sees
        every protocol message as ("sent" | "received", peer id, message); `resume_secret` (from an earlier
        session's `resume_secret`) reclaims this peer id, e.g. to `attach` to a job submitted before."""
        self.peer_id = peer_id or f"client-{uuid.uuid4().hex[:10]}"
        self.timeouts = timeouts or ClientTimeouts()
        self.ice_servers = tuple(ice_servers)
        self.signaling = SignalingClient(
            server_url,
            token,
            self.peer_id,
            role="client",
            on_peer_message=self._on_message,
            on_connect=self._on_reconnect,
            resume_secret=resume_secret,
        )
        self._jobs: dict[str, Job] = {}
        self._trace = trace
        self.rtc_options = RtcOptions.from_settings(
            ice_servers, loopback_only=loopback_only, fast_path=rtc_fast_path
        )

    async def __aenter__(self) -> JobClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        install_rtc_patches()
        try:
            await self.signaling.connect(timeout=self.timeouts.connect)
        except TimeoutError:
            url, seconds = self.signaling.url, self.timeouts.connect
            raise ClientTimeoutError(
                f"could not reach the signaling server at {url} within {seconds:g} s"
            ) from None

    async def close(self) -> None:
        for job in list(self._jobs.values()):
            await job.close_channel()
        await self.signaling.close()

    @property
    def resume_secret(self) -> str | None:
        """The secret that reclaims this peer id in a later session (keep it with the peer id)."""
        return self.signaling.resume_secret

    async def attach(self, job_id: str, worker_id: str) -> Job:
        """Follow a job this peer id submitted in an earlier session: its events are replayed from the start,
        and its results can be downloaded while the worker keeps them."""
        job = Job(self, JobRequest(job_id, "unknown"), {})
        job.worker_id = worker_id
        self._jobs[job_id] = job
        await self._send(worker_id, JobSync(job_id, 0))
        return job

    async def discover_workers(self, filters: Mapping[str, Any] | None = None) -> list[WorkerInfo]:
        """Workers in this room matching `filters` (`{"properties": {"status": "available"}}` and the like)."""
        query = {"role": "worker", **(filters or {})}
        peers = await self.signaling.discover(query)
        return [WorkerInfo(p["peer_id"], dict(p.get("metadata", {}).get("properties", {}))) for p in peers]

    async def submit(
        self,
        job_type: str,
        config: Mapping[str, Any] | None = None,
        inputs: Sequence[Path] = (),
        requirements: Requirements | None = None,
        *,
        job_id: str | None = None,
        bid_window: float = 0.0,
        on_upload: ProgressFn | None = None,
    ) -> Job:
        """Reserve a worker, assign the job, open the data channel, upload `inputs` and start the run.

        `job_request` goes to every available worker that meets `requirements`; the first acceptance wins (or,
        with `bid_window` > 0, the lowest estimate among those that accept within the window). Every other
        worker that accepted is sent `job_cancel` at once, so none stays reserved by a losing bid.
        """
        requirements = requirements or Requirements()
        phases: dict[str, float] = {}
        started = time.perf_counter()
        request = JobRequest(
            job_id or f"job-{uuid.uuid4().hex[:12]}", job_type, dict(config or {}), requirements
        )
        properties: dict[str, Any] = {"status": "available"}
        if requirements.min_gpu_memory_mb:
            properties["gpu_memory_mb"] = {"$gte": requirements.min_gpu_memory_mb}
        candidates = await self.discover_workers({"properties": properties})
        if not candidates:
            raise NoWorkersError(f"no available worker with the requirements {attrs.asdict(requirements)}")
        job = Job(self, request, phases)
        self._jobs[request.job_id] = job
        try:
            await job.reserve([worker.peer_id for worker in candidates], bid_window)
            phases["reserve"] = time.perf_counter() - started
            await job.assign()
            mark = time.perf_counter()
            await job.open_channel()
            phases["channel"] = time.perf_counter() - mark
            mark = time.perf_counter()
            await job.upload(inputs, on_upload)
            phases["upload"] = time.perf_counter() - mark
        except BaseException:
            await job.abandon()
            raise
        return job

    # --- incoming messages --------------------------------------------------------------------------------

    async def _send(self, to: str, message: Message) -> bool:
        if self._trace is not None:
            self._trace("sent", to, message)
        result = await self.signaling.send(to, to_wire(message))
        return result.status != "refused"

    def _on_message(self, sender: str, payload: dict[str, Any]) -> None:
        try:
            message = parse_message(payload)
        except ProtocolError as error:
            log.warning("invalid message from %s: %s", sender, error)
            return
        if isinstance(message, UnknownMessage):
            log.warning("unhandled message type %r from %s", message.app_message_type, sender)
            return
        if self._trace is not None:
            self._trace("received", sender, message)
        job_id = getattr(message, "job_id", None)
        job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            log.debug("message %s for unknown job %s from %s ignored", type(message).__name__, job_id, sender)
            return
        job.deliver(sender, message)

    async def _on_reconnect(self) -> None:
        """After a reconnect, ask each job's worker for the events we may have missed."""
        for job in list(self._jobs.values()):
            if job.worker_id is not None and not job.finished:
                await self._send(job.worker_id, JobSync(job.job_id, job.last_seq))


class Job:
    """One submitted job: its events, its data channel, its results."""

    def __init__(self, client: JobClient, request: JobRequest, phases: dict[str, float]) -> None:
        self.client = client
        self.request = request
        self.phases = phases
        self.worker_id: str | None = None
        self.last_seq = 0
        self.finished = False
        self.terminal: JobEvent | None = None
        self.history: list[JobEvent] = []
        self._responses: asyncio.Queue[tuple[str, Message]] = asyncio.Queue()
        self._events: asyncio.Queue[JobEvent | None] = asyncio.Queue()  # None: the worker lost the job
        self._lost: str | None = None
        self._control: asyncio.Queue[Message] = asyncio.Queue()
        self._pc: RTCPeerConnection | None = None
        self._transfer: ClientTransferEndpoint | None = None
        self.uploaded: list[UploadedFile] = []

    @property
    def job_id(self) -> str:
        return self.request.job_id

    def deliver(self, sender: str, message: Message) -> None:
        """Sort one incoming message: bids, control replies from our worker, or job events in order."""
        if self.worker_id is None or (isinstance(message, JobResponse) and sender != self.worker_id):
            self._responses.put_nowait((sender, message))
        elif sender != self.worker_id:
            log.debug("message from %s about job %s ignored: not its worker", sender, self.job_id)
        elif (
            isinstance(message, JobStatus | JobComplete | JobFailed | JobCancelled)
            and message.seq is not None
        ):
            self._on_job_event(message)
        elif isinstance(message, AppError) and message.code == "UNKNOWN_JOB" and not self.finished:
            self._lost = f"worker {sender} no longer holds job {self.job_id} (it restarted or let it go)"
            self._events.put_nowait(None)  # wakes events()
        else:
            self._control.put_nowait(message)

    def _on_job_event(self, event: JobEvent) -> None:
        assert event.seq is not None
        if event.seq <= self.last_seq:
            return  # a replay we already have
        if event.seq > self.last_seq + 1:
            log.info(
                "job %s: events %d..%d missing; asking for a replay",
                self.job_id,
                self.last_seq + 1,
                event.seq - 1,
            )
            asyncio.get_running_loop().create_task(
                self.client._send(self.worker_id or "", JobSync(self.job_id, self.last_seq))
            )
            return
        self.last_seq = event.seq
        self.history.append(event)
        if not isinstance(event, JobStatus):
            self.finished, self.terminal = True, event
        self._events.put_nowait(event)

    # --- submission steps ---------------------------------------------------------------------------------

    async def reserve(self, workers: list[str], bid_window: float) -> None:
        await asyncio.gather(*(self.client._send(worker, self.request) for worker in workers))
        pending, accepted, rejected = set(workers), dict[str, float](), dict[str, tuple[str, Sequence[str]]]()
        window_ends: float | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.client.timeouts.response
        while pending:
            wait_until = deadline if window_ends is None else min(deadline, window_ends)
            try:
                async with asyncio.timeout_at(wait_until):
                    sender, message = await self._responses.get()
            except TimeoutError:
                break
            if not isinstance(message, JobResponse) or sender not in pending:
                continue
            pending.discard(sender)
            if message.accepted:
                accepted[sender] = message.estimated_duration_minutes or 0.0
                if bid_window <= 0:
                    break
                window_ends = window_ends or loop.time() + bid_window
            else:
                rejected[sender] = (message.reason or "rejected", message.details or ())
        if not accepted:
            for worker in pending:
                rejected[worker] = (
                    "no answer",
                    [f"no job_response within {self.client.timeouts.response:g} s"],
                )
            raise AllRejectedError(rejected)
        self.worker_id = min(accepted, key=lambda worker: accepted[worker])
        losers = [worker for worker in [*accepted, *pending] if worker != self.worker_id]
        for worker in losers:  # late acceptances are released too: a cancel of nothing is ignored by workers
            await self.client._send(worker, JobCancel(self.job_id))
        log.info("job %s: worker %s won (%d other bid(s) released)", self.job_id, self.worker_id, len(losers))

    async def assign(self) -> None:
        assert self.worker_id is not None
        await self.client._send(self.worker_id, JobAssignment(self.job_id))

    async def open_channel(self) -> None:
        """Offer a data channel to the worker and wait until it is open (replacing any earlier one)."""
        try:
            await self._open_channel()
        except RtcSetupError as error:
            await self.close_channel()
            raise DataChannelError("RTC_SETUP_FAILED", str(error)) from error

    async def _open_channel(self) -> None:
        assert self.worker_id is not None
        await self.close_channel()
        timeout = self.client.timeouts.rtc_setup
        self._pc = pc = create_peer_connection(self.client.rtc_options)
        channel, offer = await create_offer(pc, timeout=timeout)
        await self.client._send(
            self.worker_id, RtcOffer(self.job_id, offer, tuning.capability_options(self.client.rtc_options))
        )
        reply = await self._next_control((RtcAnswer, AppError, ReservationExpired), timeout)
        if isinstance(reply, ReservationExpired):
            raise ReservationExpiredError(
                f"worker {self.worker_id} released job {self.job_id} before it was assigned"
            )
        if isinstance(reply, AppError):
            raise WorkerRefusedError(reply.code, reply.message)
        assert isinstance(reply, RtcAnswer)
        profile = tuning.negotiate(self.client.rtc_options, reply.options.get(tuning.CAPABILITY_KEY))
        tuning.apply_fast_path(
            pc, profile
        )  # before the answer is applied: the worker may send large records at once
        await accept_answer(pc, reply.sdp, timeout=timeout)
        await wait_channel_open(pc, channel, timeout=timeout)
        window = tuning.transfer_window(profile)
        self._transfer = ClientTransferEndpoint(
            channel,
            tuning=TransferTuning(**window),
            reply_timeout=self.client.timeouts.transfer_reply,
        )

    async def upload(self, inputs: Sequence[Path], on_progress: ProgressFn | None = None) -> None:
        """Upload the inputs and commit them: the worker starts the run.

        If the data channel drops, a new one is opened and the upload resumes from what the worker verified.
        """
        paths = [Path(path) for path in inputs]

        async def upload_and_commit(transfer: ClientTransferEndpoint) -> None:
            try:
                self.uploaded = await transfer.upload(paths, on_progress)
                await transfer.commit()
            except RemoteTransferError as error:
                if error.code != TransferCode.COMMITTED:  # else the commit went through before a drop
                    raise

        await self._over_channel("upload", upload_and_commit)

    async def _over_channel(
        self, what: str, operation: Callable[[ClientTransferEndpoint], Awaitable[T]]
    ) -> T:
        """Run a transfer over the open data channel; when the channel drops, run it again over a new one
        (the transfer protocol resumes where the worker's verified bytes end)."""
        retries = self.client.timeouts.channel_retries
        for attempt in range(retries + 1):
            if self._transfer is None or self._transfer.channel.readyState != "open":
                await self.open_channel()
            assert self._transfer is not None
            try:
                return await operation(self._transfer)
            except ChannelClosedError as error:
                if attempt == retries:
                    message = f"{what} failed {attempt + 1} times: {error.message}"
                    raise DataChannelError(error.code, message) from error
                log.warning(
                    "job %s: data channel dropped during the %s; going on over a new one", self.job_id, what
                )
                await self.close_channel()
            except TransferError as error:
                raise DataChannelError(error.code, error.message) from error
        raise AssertionError("unreachable")

    async def _next_control(self, kinds: tuple[type[Message], ...], timeout: float) -> Message:
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
        """The job's events in order (`job_status`…, then the terminal one), with loss and liveness checks."""
        timeouts = self.client.timeouts
        unreachable_since: float | None = None
        while not (self.finished and self._events.empty()):
            try:
                async with asyncio.timeout(timeouts.liveness):
                    event = await self._events.get()
            except TimeoutError:
                unreachable_since = await self._check_worker(unreachable_since)
                continue
            if event is None:
                raise WorkerGoneError(self._lost or f"worker {self.worker_id} lost job {self.job_id}")
            unreachable_since = None
            yield event
            if event is self.terminal:
                return

    async def _check_worker(self, unreachable_since: float | None) -> float | None:
        """Ask for missed events; raise WorkerGoneError when the worker stays unreachable too long."""
        assert self.worker_id is not None
        result = await self.client.signaling.send(
            self.worker_id, to_wire(JobSync(self.job_id, self.last_seq))
        )
        if result.status != "refused":
            return None
        now = time.monotonic()
        since = unreachable_since or now
        if now - since >= self.client.timeouts.worker_gone:
            raise WorkerGoneError(
                f"worker {self.worker_id} left while holding job {self.job_id} ({result.code})"
            )
        return since

    async def wait(self) -> JobEvent:
        """Follow the job to its terminal event and return it."""
        async for _ in self.events():
            pass
        assert self.terminal is not None
        return self.terminal

    async def result(self, out_dir: Path, on_download: ProgressFn | None = None) -> JobOutcome:
        """Wait for completion, download the result files into `out_dir`, and describe the outcome."""
        terminal = await self.wait()
        if isinstance(terminal, JobFailed):
            raise JobFailedError(terminal.error.code, terminal.error.message, terminal.error.recoverable)
        if isinstance(terminal, JobCancelled):
            raise JobCancelledError(f"job {self.job_id} was cancelled")
        assert isinstance(terminal, JobComplete)
        mark = time.perf_counter()
        files = await self.download(out_dir, on_download)
        self.phases["download"] = time.perf_counter() - mark
        await self.close_channel()
        result: JobResult = terminal.result
        return JobOutcome(
            self.job_id,
            self.worker_id or "",
            tuple(files),
            result.training_duration_minutes,
            result.model_size_mb,
            dict(self.phases),
        )

    async def download(self, out_dir: Path, on_progress: ProgressFn | None = None) -> list[Path]:
        """Fetch the job's result files; reopens the data channel when it has dropped (before or during)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        return await self._over_channel("download", lambda transfer: transfer.download(out_dir, on_progress))

    async def cancel(self) -> None:
        """Ask the worker to cancel the job and wait for its acknowledgement."""
        if self.worker_id is None or self.finished:
            return
        await self.client._send(self.worker_id, JobCancel(self.job_id))
        try:
            async with asyncio.timeout(self.client.timeouts.cancel):
                terminal = await self.wait()
        except TimeoutError:
            raise ClientTimeoutError(
                f"job {self.job_id}: no job_cancelled within {self.client.timeouts.cancel:g} s"
            ) from None
        if not isinstance(terminal, JobCancelled):
            log.info("job %s ended before the cancel took effect: %s", self.job_id, terminal.TYPE)

    async def abandon(self) -> None:
        """Give the job up after a failed submission: release the worker, close the channel."""
        if self.worker_id is not None and not self.finished:
            with contextlib.suppress(Exception):
                await self.client._send(self.worker_id, JobCancel(self.job_id))
        await self.close_channel()
        self.client._jobs.pop(self.job_id, None)

    async def close_channel(self) -> None:
        if self._transfer is not None:
            self._transfer.close()
            self._transfer = None
        if self._pc is not None:
            with contextlib.suppress(Exception):
                await self._pc.close()
            self._pc = None
