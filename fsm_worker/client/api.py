"""The client API: find workers, submit a job, follow it, fetch its results.

    async with JobClient(url, token) as client:
        job = await client.submit("train-demo", {"epochs": 20}, [Path("data.csv")])
        async for event in job.events():
            print(event)
        result = await job.result(Path("results"))

Every wait is bounded; failures raise the typed errors of `fsm_worker.protocol.client.errors`. This module
and `job.py` only do IO: the job protocol itself is the pure core in `fsm_worker.protocol.client`.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from fsm_worker.client.job import Job, JobLink
from fsm_worker.client.job_results import JobOutcome, ProgressFn
from fsm_worker.protocol.client.errors import (
    AllRejectedError,
    ClientTimeoutError,
    DataChannelError,
    JobCancelledError,
    JobClientError,
    JobFailedError,
    NoWorkersError,
    ReservationExpiredError,
    WorkerGoneError,
    WorkerRefusedError,
)
from fsm_worker.protocol.client.events import ClientTimeouts
from fsm_worker.protocol.errors import MessageError
from fsm_worker.protocol.messages import (
    JobRequest,
    Message,
    Requirements,
    UnknownMessage,
    parse_message,
    to_wire,
)
from fsm_worker.protocol.transfer.download import DownloadLimits
from fsm_worker.shells.rtc.config import IceServerConfig
from fsm_worker.shells.rtc.options import RtcOptions
from fsm_worker.shells.rtc.peer import install_rtc_patches
from fsm_worker.shells.signaling import SendResult, SignalingClient

log = logging.getLogger(__name__)

__all__ = [
    "AllRejectedError",
    "ClientTimeoutError",
    "ClientTimeouts",
    "DataChannelError",
    "Job",
    "JobCancelledError",
    "JobClient",
    "JobClientError",
    "JobFailedError",
    "JobOutcome",
    "NoWorkersError",
    "ReservationExpiredError",
    "WorkerGoneError",
    "WorkerInfo",
    "WorkerRefusedError",
]


#: The statuses of a worker that can take or queue a job (anything else is not offered the job).
LIVE_STATUSES = frozenset({"available", "reserved", "busy"})


@attrs.frozen
class WorkerInfo:
    peer_id: str
    properties: dict[str, Any]
    #: The rest of the worker's metadata (issue 12: `slots` per slot, `queue`, `running`).
    metadata: dict[str, Any] = attrs.field(factory=dict)

    @property
    def status(self) -> str:
        return str(self.properties.get("status", "unknown"))

    def count(self, name: str, default: int = 0) -> int:
        """An integer property (`slots`, `free_slots`, `queue_length`, ...), `default` when absent."""
        value = self.properties.get(name, default)
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    @property
    def slots(self) -> int:
        """Slots the worker offers (1 for a worker from before issue 12)."""
        return self.count("slots", 1)

    @property
    def free_slots(self) -> int:
        return self.count("free_slots", 1 if self.status == "available" else 0)

    @property
    def queue_length(self) -> int:
        return self.count("queue_length")

    @property
    def queue_size(self) -> int:
        """The queue's capacity (0: the worker does not queue)."""
        queue = self.metadata.get("queue")
        if isinstance(queue, dict) and isinstance(queue.get("size"), int):
            return int(queue["size"])
        return self.queue_length + self.count("queue_free")

    @property
    def running(self) -> int:
        """Jobs running now (the worker publishes a count, never other clients' job ids)."""
        running = self.metadata.get("running")
        if isinstance(running, int) and not isinstance(running, bool):
            return running
        return sum(1 for slot in self.slot_list if slot.get("state") == "busy")

    @property
    def slot_list(self) -> list[dict[str, Any]]:
        """`metadata.slots`: one `{index, gpus, memory_mb, state, model?}` per slot (empty from an older worker)."""
        slots = self.metadata.get("slots")
        return [slot for slot in slots if isinstance(slot, dict)] if isinstance(slots, list) else []

    @property
    def gpu_models(self) -> list[str]:
        """The models its GPU slots publish (`slots[].model`), each once, in slot order (empty when none does)."""
        found: list[str] = []
        for slot in self.slot_list:
            model = slot.get("model")
            if isinstance(model, str) and model and model not in found:
                found.append(model)
        return found

    @property
    def gpus(self) -> list[int]:
        """The GPU indices behind the worker's slots (empty on CPU-only workers)."""
        found: list[int] = []
        for slot in self.slot_list:
            gpus = slot.get("gpus")
            if isinstance(gpus, list):
                found += [gpu for gpu in gpus if isinstance(gpu, int) and gpu not in found]
        return found


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
        download_limits: DownloadLimits | None = None,
    ) -> None:
        """`loopback_only` makes 127.0.0.1 the only ICE host candidate (tests, the demo); `rtc_fast_path`
        ("loopback" or "lan") offers larger SCTP packets, used only when the worker offers them too; `trace` sees
        every protocol message as ("sent" | "received", peer id, message); `resume_secret` (from an earlier
        session's `resume_secret`) reclaims this peer id, e.g. to `attach` to a job submitted before;
        `download_limits` caps the count and size of each job's results (a rogue worker's too)."""
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
            self.ice_servers, loopback_only=loopback_only, fast_path=rtc_fast_path
        )
        self._link = JobLink(
            self._send, self.timeouts, self.rtc_options, self._forget, download_limits or DownloadLimits()
        )

    async def __aenter__(self) -> JobClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        install_rtc_patches()  # idempotent; the per-connection options live in `rtc_options`
        try:
            await self.signaling.connect(timeout=self.timeouts.connect)
        except TimeoutError:
            url, seconds = self.signaling.url, self.timeouts.connect
            raise ClientTimeoutError(
                f"could not reach the signaling server at {url} within {seconds:g} s"
            ) from None

    async def close(self) -> None:
        for job in list(self._jobs.values()):
            await job.close()
        await self.signaling.close()

    @property
    def resume_secret(self) -> str | None:
        """The secret that reclaims this peer id in a later session (keep it with the peer id)."""
        return self.signaling.resume_secret

    async def attach(self, job_id: str, worker_id: str, job_key: str | None = None) -> Job:
        """Follow a job this peer id submitted in an earlier session (`job_key`: its `Job.job_key`): its events
        are replayed from the start, and its results can be downloaded while the worker keeps them."""
        job = Job(self._link, JobRequest(job_id, "unknown"), {}, job_key)
        self._jobs[job_id] = job
        job.attach(worker_id)
        return job

    async def discover_workers(self, filters: Mapping[str, Any] | None = None) -> list[WorkerInfo]:
        """Workers in this room matching `filters` (`{"properties": {"status": "available"}}` and the like)."""
        query = {"role": "worker", **(filters or {})}
        peers = await self.signaling.discover(query)
        infos = []
        for peer in peers:
            metadata = dict(peer.get("metadata") or {})
            properties = metadata.pop("properties", None)
            infos.append(WorkerInfo(peer["peer_id"], dict(properties or {}), metadata))
        return infos

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
        queue: bool = False,
    ) -> Job:
        """Reserve a worker, assign the job, open the data channel, upload `inputs` and start the run.

        `job_request` goes to every available worker that meets `requirements`; the first acceptance wins (or,
        with `bid_window` > 0, the lowest estimate among those that accept within the window). Every other
        worker that accepted is sent `job_cancel` at once, so none stays reserved by a losing bid. The job gets
        a fresh secret `job_key` (`Job.job_key`); the request carries only its sha256.

        With `queue=True` busy workers are asked too, and one that has no slot free may accept the job into
        its queue: an offer to run now still wins; otherwise the earliest estimated start does, and only that
        worker keeps a queue entry. The inputs are uploaded while the job waits (`Job.queued`,
        `Job.queue_position`); `events()` shows `job_status` "queued" as the position moves, then the run.
        `requirements.gpus` asks for that many slots (GPUs) together on one worker.
        """
        requirements = requirements or Requirements()
        phases: dict[str, float] = {}
        started = time.perf_counter()
        request = JobRequest(
            job_id or f"job-{uuid.uuid4().hex[:12]}",
            job_type,
            dict(config or {}),
            requirements,
            queue=queue,
        )
        candidates = await self._candidates(requirements, queue)
        if not candidates:
            what = "live" if queue else "available"
            raise NoWorkersError(f"no {what} worker with the requirements {attrs.asdict(requirements)}")
        job = Job(self._link, request, phases, secrets.token_urlsafe(32))
        self._jobs[request.job_id] = job
        try:
            await job.reserve([worker.peer_id for worker in candidates], bid_window)
            phases["reserve"] = time.perf_counter() - started
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

    async def _candidates(self, requirements: Requirements, queue: bool) -> list[WorkerInfo]:
        """The workers to ask: available ones with room now; with `queue`, also busy ones that could ever
        hold the job (a busy worker's free GPU memory says nothing: it answers `incompatible` itself)."""
        properties: dict[str, Any] = {}
        if queue:
            if requirements.gpus > 1:
                properties["slots"] = {"$gte": requirements.gpus}
            workers = await self.discover_workers({"properties": properties} if properties else None)
            return [worker for worker in workers if worker.status in LIVE_STATUSES]
        properties["status"] = "available"
        if requirements.min_gpu_memory_mb:
            properties["gpu_memory_mb"] = {"$gte": requirements.min_gpu_memory_mb}
        if requirements.gpus > 1:
            properties["free_slots"] = {"$gte": requirements.gpus}
        return await self.discover_workers({"properties": properties})

    # --- incoming messages --------------------------------------------------------------------------------

    async def _send(self, to: str, message: Message) -> SendResult:
        if self._trace is not None:
            self._trace("sent", to, message)
        return await self.signaling.send(to, to_wire(message))

    def _forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def _on_message(self, sender: str, payload: dict[str, Any]) -> None:
        try:
            message = parse_message(payload)
        except MessageError as error:
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
            job.reconnected()
