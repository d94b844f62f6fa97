"""Fault and load tests: real signaling servers, worker hosts, raw peers and job clients on loopback.

Helpers are kept here (not in `fsm_worker/`): a restartable server room, raw peers with an inbox, a
message barrier (`probe`), a raw data channel to a worker, and a worker host in its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiortc import RTCDataChannel, RTCPeerConnection

from fsm_worker.client import ClientTimeouts, JobClient
from fsm_worker.core.events import WorkerStatus
from fsm_worker.host import WorkerConfig, WorkerHost
from fsm_worker.jobs.registry import JobTypeRegistry, StaticCommandHandler
from fsm_worker.rtc.config import make_configuration
from fsm_worker.rtc.loopback import use_loopback_candidates
from fsm_worker.rtc.session import accept_answer, create_offer, wait_channel_open
from fsm_worker.signaling.client import SendResult, SignalingClient
from fsm_worker.signaling.server import RunningServer, start_server
from fsm_worker.signaling.testing import free_port, loopback_config

TIMEOUT = 20.0
SCRIPTS = Path(__file__).parent / "scripts"
REPO = Path(__file__).resolve().parents[2]
#: Job types of these tests, never offered to hypothesis-generated requests.
JOB_TYPES = ("ticker", "long-ticker", "copy")


def registry(pid_file: Path | None = None) -> JobTypeRegistry:
    """Worker-side test jobs: `ticker` (12 lines 0.25 s apart, then `ticks.txt`), `long-ticker` (a minute),
    `copy` (inputs copied to outputs unchanged). With `pid_file`, the tickers append their pid to it."""
    types = JobTypeRegistry()
    ticker = (sys.executable, "-u", str(SCRIPTS / "ticker.py"))
    pids = (str(pid_file),) if pid_file else ()
    types.register("ticker", StaticCommandHandler((*ticker, "12", "0.25", *pids)))
    types.register("long-ticker", StaticCommandHandler((*ticker, "240", "0.25", *pids)))
    types.register("copy", StaticCommandHandler((sys.executable, "-u", str(SCRIPTS / "copy_job.py"))))
    return types


class Inbox:
    """Peer messages received by a raw peer; every wait is bounded."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def __call__(self, sender: str, payload: dict[str, Any]) -> None:
        self.queue.put_nowait((sender, payload))

    async def next(self, timeout: float = TIMEOUT) -> tuple[str, dict[str, Any]]:
        async with asyncio.timeout(timeout):
            return await self.queue.get()

    async def next_of(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Skip to the next message of `kind`."""
        async with asyncio.timeout(timeout):
            while True:
                _, payload = await self.queue.get()
                if payload.get("app_message_type") == kind:
                    return payload

    def empty(self) -> bool:
        return self.queue.empty()


async def probe(peer: SignalingClient, inbox: Inbox, worker_id: str) -> list[dict[str, Any]]:
    """A barrier: everything `worker_id` sent `peer` before it answers a `job_sync` for an unknown job.

    The worker handles one peer's messages in order and sends its replies in order, so any reply to an
    earlier message arrives before the `UNKNOWN_JOB` error that ends the returned list.
    """
    marker = f"probe-{uuid.uuid4().hex[:10]}"
    result = await peer.send(worker_id, {"app_message_type": "job_sync", "job_id": marker, "after_seq": 0})
    assert result.delivered, result
    before: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT):
        while True:
            sender, payload = await inbox.next()
            if sender == worker_id and payload.get("job_id") == marker:
                assert payload["app_message_type"] == "app_error" and payload["code"] == "UNKNOWN_JOB"
                return before
            before.append(payload)


@attrs.define
class Room:
    """A signaling server (in this process, restartable on its port) and factories of peers in its room."""

    token: str
    port: int
    tmp: Path
    grace: float = 5.0
    server: RunningServer | None = None
    closers: list[Callable[[], Awaitable[None]]] = attrs.field(factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start_server(self, tokens: list[str] | None = None, **overrides: Any) -> None:
        """Serve this room (and the rooms of any other `tokens`) on the room's port."""
        config = loopback_config(
            tokens or [self.token], port=self.port, resume_grace_seconds=self.grace, **overrides
        )
        self.server = await start_server(config)

    async def stop_server(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def worker(self, peer_id: str = "worker-1", **overrides: Any) -> WorkerHost:
        options: dict[str, Any] = {
            "workdir": self.tmp / peer_id,
            "gpu_memory_mb": 8192,
            "loopback_only": True,
            "kill_grace": 2.0,
            **overrides,
        }
        host = WorkerHost(
            WorkerConfig(self.url, self.token, peer_id, **options), registry(self.tmp / f"{peer_id}.pids")
        )
        await host.start()
        self.closers.append(host.shutdown)
        return host

    async def peer(self, peer_id: str, token: str | None = None) -> tuple[SignalingClient, Inbox]:
        inbox = Inbox()
        peer = SignalingClient(self.url, token or self.token, peer_id, role="client", on_peer_message=inbox)
        await peer.connect(timeout=TIMEOUT)
        self.closers.append(peer.close)
        return peer, inbox

    async def client(self, peer_id: str | None = None, connect: bool = True, **timeouts: Any) -> JobClient:
        client = JobClient(
            self.url, self.token, peer_id, loopback_only=True, timeouts=ClientTimeouts(**timeouts)
        )
        if connect:
            await client.connect()
        self.closers.append(client.close)
        return client

    async def close(self) -> None:
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(TIMEOUT):
                    await close()
        await self.stop_server()


@pytest.fixture
async def room(tmp_path: Path) -> AsyncIterator[Room]:
    room = Room(secrets.token_hex(12), free_port(), tmp_path)
    await room.start_server()
    try:
        yield room
    finally:
        await room.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = TIMEOUT) -> None:
    """Poll `check` (an observation over the network) until it holds; fail after `timeout`."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


def holds(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """A local predicate as an `eventually` check."""

    async def check() -> bool:
        return predicate()

    return check


async def advertised(peer: SignalingClient, worker_id: str) -> dict[str, Any]:
    """The worker's discovery properties as another peer sees them."""
    peers = await peer.discover({"role": "worker"})
    (found,) = [p for p in peers if p["peer_id"] == worker_id]
    return dict(found["metadata"]["properties"])


def idle(host: WorkerHost) -> bool:
    """The worker's core holds nothing: available, no reservation, no current job."""
    core = host.core
    return core.status is WorkerStatus.AVAILABLE and core.reservation is None and core.current_job is None


SendLog = list[tuple[str, dict[str, Any]]]


def record_sends(host: WorkerHost) -> SendLog:
    """Record every peer message the worker hands to its signaling client, in the order it sends them."""
    sent: SendLog = []
    original = host.signaling.send

    async def send(to: str, payload: Mapping[str, Any]) -> SendResult:
        sent.append((to, dict(payload)))
        return await original(to, payload)

    setattr(host.signaling, "send", send)  # noqa: B010  (instance attribute shadows the method)
    return sent


async def open_raw_channel(
    peer: SignalingClient, inbox: Inbox, worker_id: str, job_id: str
) -> tuple[RTCPeerConnection, RTCDataChannel]:
    """Offer a data channel for `job_id` to the worker as `peer` and wait until it is open."""
    use_loopback_candidates(True)
    pc = RTCPeerConnection(make_configuration(()))
    channel, offer = await create_offer(pc, timeout=TIMEOUT)
    await peer.send(worker_id, {"app_message_type": "rtc_offer", "job_id": job_id, "sdp": offer})
    answer = await inbox.next_of("rtc_answer")
    await accept_answer(pc, answer["sdp"], timeout=TIMEOUT)
    await wait_channel_open(pc, channel, timeout=TIMEOUT)
    return pc, channel


async def reserve_and_assign(
    peer: SignalingClient, inbox: Inbox, worker_id: str, job_id: str, job_type: str
) -> None:
    """As `peer`: request `job_id` from the worker (it must accept), then assign it."""
    request = {"app_message_type": "job_request", "job_id": job_id, "job_type": job_type}
    assert (await peer.send(worker_id, request)).delivered
    response = await inbox.next_of("job_response")
    assert response["accepted"] is True, response
    assert (await peer.send(worker_id, {"app_message_type": "job_assignment", "job_id": job_id})).delivered


@attrs.define
class WorkerProcess:
    """A worker host in a child process (`scripts/worker_proc.py`); its runs append their pids to `pid_file`."""

    process: asyncio.subprocess.Process
    pid_file: Path

    @classmethod
    async def start(cls, url: str, token: str, peer_id: str, workdir: Path) -> WorkerProcess:
        pid_file = workdir.parent / f"{peer_id}.pids"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        args = (url, token, peer_id, str(workdir), str(pid_file))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-u",
            str(SCRIPTS / "worker_proc.py"),
            *args,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(TIMEOUT):
                while (line := await proc.stdout.readline()) != b"READY\n":
                    if not line:
                        raise RuntimeError(f"worker process exited before READY (rc={await proc.wait()})")
        except BaseException:
            await cls(proc, pid_file).kill()
            raise
        return cls(proc, pid_file)

    async def kill(self) -> None:
        """SIGKILL the worker (a crash: no goodbye), then its orphaned runs."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.kill_runs()

    def kill_runs(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            for pid in self.pid_file.read_text().split():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid), signal.SIGKILL)
