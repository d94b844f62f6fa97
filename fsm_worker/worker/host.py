"""The worker host: what a worker program embeds.

It wires the sans-IO core (`JobCoordinator`) to its shells — the signaling connection, the RTC data channel
with the transfer endpoint, and the job runner. Every input becomes a core event, fed in arrival order from
the one event loop (`_feed`); every instruction the core returns is carried out here and nothing else
decides protocol questions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import socket
import uuid
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import attrs
from aiortc import RTCDataChannel, RTCPeerConnection

from fsm_worker.jobs import events as run_events
from fsm_worker.jobs.registry import JobTypeRegistry, default_registry
from fsm_worker.jobs.spec import JobInputInvalid, JobSpec
from fsm_worker.protocol.messages import (
    AppError,
    JobError,
    JobRequest,
    JobResult,
    Message,
    RtcAnswer,
    to_wire,
)
from fsm_worker.protocol.worker.capabilities import WorkerCapabilities, detect_capabilities
from fsm_worker.protocol.worker.coordinator import CoordinatorConfig, JobCoordinator
from fsm_worker.protocol.worker.events import (
    AcceptOffer,
    Advertise,
    CleanupJob,
    Drain,
    Event,
    InputsReady,
    Instruction,
    PeerMessage,
    RunFailed,
    RunProgress,
    RunStarted,
    RunStopped,
    RunSucceeded,
    Send,
    StartRun,
    StopRun,
    TimerFired,
    WorkerStatus,
)
from fsm_worker.shells.rtc import tuning
from fsm_worker.shells.rtc.config import IceServerConfig, make_configuration
from fsm_worker.shells.rtc.loopback import use_loopback_candidates
from fsm_worker.shells.rtc.session import IncomingChannel, RtcSetupError, create_answer
from fsm_worker.shells.runner.environment import DEFAULT_ALLOW
from fsm_worker.shells.runner.runner import JobRunner
from fsm_worker.shells.signaling import SendResult, SendStatus, SignalingClient
from fsm_worker.shells.transfer.flow import TransferTuning
from fsm_worker.shells.transfer.store import ContentStore
from fsm_worker.shells.transfer.worker import WorkerTransferEndpoint

log = logging.getLogger(__name__)

GiB = 1024**3


@attrs.frozen
class WorkerConfig:
    """Everything a worker host needs; the CLI fills it from flags, `FSM_WORKER_*` variables or TOML."""

    server_url: str
    token: str
    peer_id: str = attrs.field(factory=lambda: f"worker-{socket.gethostname()}-{uuid.uuid4().hex[:6]}")
    workdir: Path = attrs.field(converter=Path, factory=lambda: Path.home() / ".cache" / "fsm-worker")
    job_types: tuple[str, ...] = ()  # default: every type in the registry
    tags: tuple[str, ...] = ()
    gpu_memory_mb: int | None = None  # None: detected
    gpu_model: str | None = None
    cuda_version: str | None = None
    reservation_timeout: float = 30.0
    input_timeout: float = 1800.0
    retention: float = 3600.0
    job_timeout: float | None = None
    kill_grace: float = 5.0
    max_upload_bytes: int = 10 * GiB
    ice_servers: tuple[IceServerConfig, ...] = ()
    rtc_setup_timeout: float = 15.0
    shutdown_policy: str = attrs.field(default="finish", validator=attrs.validators.in_(("finish", "cancel")))
    shutdown_timeout: float = 300.0
    loopback_only: bool = False  # 127.0.0.1 as the only ICE host candidate (tests, the demo)
    rtc_fast_path: str | None = None  # "loopback" or "lan": larger SCTP packets when the peer offers them too
    job_env_allow: tuple[str, ...] = ()  # more worker variables (names or PREFIX*) a job may see


class WorkerHost:
    """A worker: `await start()`, then `await wait_closed()`; `await shutdown()` stops it gracefully."""

    def __init__(self, config: WorkerConfig, registry: JobTypeRegistry | None = None) -> None:
        self.config = config
        self.registry = registry or default_registry()
        job_types = config.job_types or tuple(self.registry.names())
        unknown = sorted(set(job_types) - set(self.registry.names()))
        if unknown:
            known = ", ".join(self.registry.names())
            raise ValueError(
                f"job types {', '.join(unknown)} are not configured on this worker (known: {known})"
            )
        overrides = {
            "gpu_memory_mb": config.gpu_memory_mb,
            "gpu_model": config.gpu_model,
            "cuda_version": config.cuda_version,
        }
        self.capabilities: WorkerCapabilities = detect_capabilities(job_types, overrides)
        self.core = JobCoordinator(
            self.capabilities,
            CoordinatorConfig(config.reservation_timeout, config.input_timeout, config.retention),
            estimator=self._estimate,
            check_config=self._check_config,
        )
        self.runner = JobRunner(
            self.registry,
            timeout=config.job_timeout,
            kill_grace=config.kill_grace,
            env_allow=(*DEFAULT_ALLOW, *config.job_env_allow),
        )
        self.store = ContentStore(config.workdir / "store")
        self.signaling = SignalingClient(
            config.server_url,
            config.token,
            config.peer_id,
            role="worker",
            metadata={"tags": list(config.tags), "properties": self._properties()},
            on_peer_message=self._on_peer_message,
            resume_secret=self._load_resume_secret(),
        )
        self._outbox: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._peers: dict[str, tuple[RTCPeerConnection, WorkerTransferEndpoint | None]] = {}
        self._committed: set[str] = set()
        self._answered: dict[str, str] = {}  # job id → the offer its current peer connection answers
        self._unreachable: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = asyncio.Event()
        self._stopping = False
        self._pump: asyncio.Task[None] | None = None
        use_loopback_candidates(config.loopback_only)
        if config.rtc_fast_path:
            tuning.enable_fast_path(config.rtc_fast_path)

    @property
    def peer_id(self) -> str:
        return self.config.peer_id

    @property
    def status(self) -> WorkerStatus:
        return self.core.status

    # --- life cycle -------------------------------------------------------------------------------------------

    async def start(self, connect_timeout: float = 10.0) -> None:
        """Connect to the signaling server and start taking jobs."""
        jobs = self.config.workdir / "jobs"
        if jobs.is_dir():  # left by an earlier run of this worker: no client can reach those jobs any more
            await asyncio.to_thread(shutil.rmtree, jobs, True)
        jobs.mkdir(parents=True, exist_ok=True)
        self._pump = asyncio.create_task(self._send_outbox(), name="worker-outbox")
        try:
            await self.signaling.connect(timeout=connect_timeout)
        except TimeoutError:
            url = self.config.server_url
            raise ConnectionError(
                f"could not reach the signaling server at {url} within {connect_timeout:g} s"
            ) from None
        self._save_resume_secret()
        log.info("worker %s ready: %s", self.peer_id, self.capabilities)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def shutdown(self, cancel_running: bool | None = None) -> None:
        """Stop taking jobs, finish (or cancel) the current one, deliver what is pending, disconnect.

        A second call while the first waits for a running job (a second Ctrl+C) stops that job.
        """
        if self._stopping:
            self._feed(Drain(cancel_running=True))
            await self._closed.wait()
            return
        self._stopping = True
        cancel = self.config.shutdown_policy == "cancel" if cancel_running is None else cancel_running
        if not cancel and self.core.current_job is not None:
            log.warning(
                "shutting down: waiting for job %s to finish (again to stop it now)",
                self.core.current_job.job_id,
            )
        self._feed(Drain(cancel_running=cancel))
        try:
            async with asyncio.timeout(self.config.shutdown_timeout):
                await self._idle.wait()
        except TimeoutError:
            log.error("the current job did not end within %.0f s; stopping it", self.config.shutdown_timeout)
            self._feed(Drain(cancel_running=True))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.kill_grace + 10):
                    await self._idle.wait()
        await self.runner.shutdown(grace_seconds=self.config.kill_grace)
        self._outbox.put_nowait(None)
        if self._pump is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self._pump
        await asyncio.gather(*(self._close_peer(job_id) for job_id in list(self._peers)))
        for task in list(self._tasks):
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        await self.signaling.close()
        self._closed.set()
        log.info("worker %s shut down", self.peer_id)

    # --- events into the core ---------------------------------------------------------------------------------

    def _feed(self, event: Event) -> None:
        """Hand one event to the core and carry out what it says. Never raises."""
        try:
            instructions = self.core.handle(event, asyncio.get_running_loop().time())
        except Exception:
            log.exception("the core failed on %r; state kept", event)
            return
        # Publish a status change before the messages that follow from it, so that a client reacting to a
        # message already discovers the new status.
        for instruction in sorted(instructions, key=lambda item: not isinstance(item, Advertise)):
            try:
                self._execute(instruction)
            except Exception:
                log.exception("carrying out %r failed", instruction)
        self._arm_timer()
        if self.core.status is WorkerStatus.AVAILABLE:
            self._idle.set()
        else:
            self._idle.clear()

    async def _on_peer_message(self, sender: str, payload: dict[str, Any]) -> None:
        self._feed(PeerMessage(sender, payload))

    def _on_run_event(self, event: run_events.RunEvent) -> None:
        match event:
            case run_events.RunStarted(job_id=job_id):
                self._feed(RunStarted(job_id))
            case run_events.RunProgress(job_id=job_id, progress=progress, message=message):
                self._feed(RunProgress(job_id, progress, message))
            case run_events.RunSucceeded(job_id=job_id):
                result = JobResult(event.training_duration_minutes, event.model_size_mb)
                self._feed(RunSucceeded(job_id, result))
            case run_events.RunFailed(job_id=job_id):
                recoverable = event.recoverable
                self._feed(RunFailed(job_id, JobError(str(event.code), event.message[-4000:], recoverable)))
            case run_events.RunStopped(job_id=job_id):
                self._feed(RunStopped(job_id))

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.core.next_deadline()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._feed, TimerFired())

    # --- instructions out of the core -------------------------------------------------------------------------

    def _execute(self, instruction: Instruction) -> None:
        match instruction:
            case Send(to=to, message=message):
                self._send(to, message)
            case Advertise(status=status, job_id=job_id):
                self._outbox.put_nowait(("meta", {"properties": {"status": status.value, "job_id": job_id}}))
            case StartRun(job=job):
                spec = JobSpec(job.job_id, job.job_type, job.config, self.job_dir(job.job_id))
                self._spawn(self.runner.start(spec, self._on_run_event), f"run-{job.job_id}")
            case StopRun(job_id=job_id):
                self._spawn(self._stop_run(job_id), f"stop-{job_id}")
            case AcceptOffer(job_id=job_id, sdp=sdp):
                if self._answered.get(job_id) == sdp:  # a client never offers the same SDP twice on purpose
                    log.info("repeated rtc_offer for job %s ignored (delivered twice)", job_id)
                    return
                self._answered[job_id] = sdp
                self._spawn(self._answer_offer(instruction), f"offer-{job_id}")
            case CleanupJob(job_id=job_id):
                self._spawn(self._cleanup(job_id), f"cleanup-{job_id}")

    def _send(self, to: str, message: Message) -> None:
        self._outbox.put_nowait(("send", (to, to_wire(message))))

    async def _send_outbox(self) -> None:
        """The one sender: messages and metadata updates leave in the order the core produced them."""
        while (item := await self._outbox.get()) is not None:
            kind, body = item
            try:
                if kind == "meta":
                    await self.signaling.update_metadata(body)
                    continue
                to, payload = body
                result = await self.signaling.send(to, payload)
                self._note_delivery(to, payload["app_message_type"], result)
            except Exception:
                log.exception("sending %s failed", kind)

    def _note_delivery(self, to: str, kind: str, result: SendResult) -> None:
        """Warn once when a peer becomes unreachable (its client replays job events with `job_sync` later)."""
        if result.delivered or result.status is SendStatus.QUEUED:
            self._unreachable.discard(to)
        elif to not in self._unreachable:
            self._unreachable.add(to)
            log.warning(
                "%s to %s not delivered: %s %s (further failures to it are not logged)",
                kind,
                to,
                result.code,
                result.message,
            )

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def _stop_run(self, job_id: str) -> None:
        await self.runner.stop(job_id, self.config.kill_grace)
        # The runner reports RunStopped itself; this covers a run it no longer knew (the core ignores repeats).
        self._feed(RunStopped(job_id))

    # --- files and the data channel ---------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        """The job's work directory (named by a hash: a job id is never used as a path)."""
        return self.config.workdir / "jobs" / hashlib.sha256(job_id.encode()).hexdigest()[:32]

    def _results(self, job_id: str) -> list[Path] | None:
        """The job's result files once it has finished, else None (not ready)."""
        if job_id not in self.core.retained_job_ids():
            return None
        outputs = self.job_dir(job_id) / "outputs"
        return sorted(path for path in outputs.rglob("*") if path.is_file()) if outputs.is_dir() else []

    def _on_inputs_committed(self, job_id: str, paths: Sequence[Path]) -> None:
        log.info("job %s: %d input file(s) committed", job_id, len(paths))
        self._committed.add(job_id)
        self._feed(InputsReady(job_id))

    async def _answer_offer(self, offer: AcceptOffer) -> None:
        job_id = offer.job_id
        await self._close_peer(job_id)  # one channel per job: a new offer replaces the old connection
        job_dir = self.job_dir(job_id)
        await asyncio.to_thread(job_dir.mkdir, parents=True, exist_ok=True)
        pc = RTCPeerConnection(make_configuration(self.config.ice_servers))
        self._peers[job_id] = (pc, None)
        # The fast path applies only when both ends offer it; it must be in place before the answer leaves.
        profile = tuning.negotiate(offer.options.get(tuning.CAPABILITY_KEY))
        window = tuning.transfer_window(profile)

        def serve(channel: RTCDataChannel) -> None:
            """Attach the transfer endpoint inside the channel event, before its first message can arrive."""
            endpoint = WorkerTransferEndpoint(
                channel,
                job_dir,
                self.store,
                self.config.max_upload_bytes,
                on_commit=lambda paths: self._on_inputs_committed(job_id, paths),
                results=lambda: self._results(job_id),
                committed=job_id in self._committed,
                tuning=TransferTuning(**window),
            )
            self._peers[job_id] = (pc, endpoint)

        try:
            incoming = IncomingChannel(pc, on_channel=serve)
            answer = await create_answer(pc, offer.sdp, timeout=self.config.rtc_setup_timeout)
            tuning.apply_fast_path(pc, profile)
            self._send(offer.client_id, RtcAnswer(job_id, answer, tuning.capability_options()))
            await incoming.wait_open(timeout=self.config.rtc_setup_timeout)
        except RtcSetupError as error:
            log.warning("data channel for job %s failed: %s", job_id, error)
            await self._close_peer(job_id)
            self._send(offer.client_id, AppError("RTC_SETUP_FAILED", str(error), job_id))
            return
        log.info("data channel open for job %s", job_id)

    async def _close_peer(self, job_id: str) -> None:
        pc, endpoint = self._peers.pop(job_id, (None, None))
        if endpoint is not None:
            with contextlib.suppress(Exception):
                await endpoint.aclose()
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()

    async def _cleanup(self, job_id: str) -> None:
        await self._close_peer(job_id)
        self._committed.discard(job_id)
        self._answered.pop(job_id, None)
        await asyncio.to_thread(shutil.rmtree, self.job_dir(job_id), True)
        log.info("job %s: work directory removed", job_id)

    # --- identity ---------------------------------------------------------------------------------------------

    @property
    def _secret_file(self) -> Path:
        safe = hashlib.sha256(self.config.peer_id.encode()).hexdigest()[:16]
        return self.config.workdir / f"resume-secret-{safe}"

    def _load_resume_secret(self) -> str | None:
        """The secret that reclaims this peer id after a restart (the server reserves a dropped id for it)."""
        try:
            return self._secret_file.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def _save_resume_secret(self) -> None:
        secret = self.signaling.resume_secret
        if secret:
            self._secret_file.parent.mkdir(parents=True, exist_ok=True)
            self._secret_file.touch(mode=0o600)
            self._secret_file.write_text(secret, encoding="utf-8")

    # --- capabilities and job types ---------------------------------------------------------------------------

    def _properties(self) -> dict[str, Any]:
        return {**self.capabilities.as_properties(), "status": self.core.status.value}

    def _estimate(self, request: JobRequest) -> float:
        return round(self.registry.get(request.job_type).estimate_minutes(request.config), 3)

    def _check_config(self, request: JobRequest) -> list[str]:
        try:
            self.registry.validate(request.job_type, request.config, request.inputs)
        except JobInputInvalid as error:
            return [str(error)]
        return []
