"""Real pieces on loopback: a signaling server, worker hosts, raw peers and job clients."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from fsm_worker.client import ClientTimeouts, JobClient
from fsm_worker.host import WorkerConfig, WorkerHost
from fsm_worker.jobs.registry import JobTypeRegistry, StaticCommandHandler, default_registry
from fsm_worker.jobs.sample_data import generate_sample_csv
from fsm_worker.signaling.client import SignalingClient
from fsm_worker.signaling.server import RunningServer, start_server
from fsm_worker.signaling.testing import free_port, loopback_config

TIMEOUT = 20.0
SCRIPTS = Path(__file__).parent / "scripts"


def registry(pid_file: Path | None = None) -> JobTypeRegistry:
    """The built-in job types plus test jobs (worker-side configuration, never a client command):
    `ticker` (12 progress lines 0.25 s apart), `long-ticker` (a minute, with a child process and a pid file),
    and `exit-3` (fails at once)."""
    types = default_registry()
    python = (sys.executable, "-u")
    types.register("ticker", StaticCommandHandler((*python, str(SCRIPTS / "ticker.py"), "12", "0.25")))
    long_args = (str(pid_file),) if pid_file else ()
    types.register(
        "long-ticker", StaticCommandHandler((*python, str(SCRIPTS / "ticker.py"), "240", "0.25", *long_args))
    )
    types.register(
        "exit-3",
        StaticCommandHandler((*python, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)")),
    )
    return types


class Inbox:
    """Peer messages received by a raw peer; `await inbox.next()` waits (bounded) for the next one."""

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


@attrs.define
class Room:
    """A running signaling server (restartable on its port) and the factories of peers in its room."""

    token: str
    port: int
    tmp: Path
    server: RunningServer | None = None
    closers: list[Callable[[], Awaitable[None]]] = attrs.field(factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start_server(self) -> None:
        self.server = await start_server(
            loopback_config([self.token], port=self.port, resume_grace_seconds=5.0)
        )

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

    async def peer(self, peer_id: str) -> tuple[SignalingClient, Inbox]:
        inbox = Inbox()
        peer = SignalingClient(self.url, self.token, peer_id, role="client", on_peer_message=inbox)
        await peer.connect(timeout=TIMEOUT)
        self.closers.append(peer.close)
        return peer, inbox

    async def client(self, peer_id: str | None = None, **timeouts: float) -> JobClient:
        client = JobClient(
            self.url, self.token, peer_id, loopback_only=True, timeouts=ClientTimeouts(**timeouts)
        )
        await client.connect()
        self.closers.append(client.close)
        return client


@pytest.fixture
async def room(tmp_path: Path) -> AsyncIterator[Room]:
    room = Room(secrets.token_hex(12), free_port(), tmp_path)
    await room.start_server()
    try:
        yield room
    finally:
        for close in reversed(room.closers):
            async with asyncio.timeout(TIMEOUT):
                await close()
        await room.stop_server()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return generate_sample_csv(tmp_path / "data.csv", rows=3000, features=4, seed=3)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = TIMEOUT) -> None:
    """Poll `check` (an observation over the network) until it holds; fail after `timeout`."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


async def advertised(peer: SignalingClient, worker_id: str) -> dict[str, Any]:
    """The worker's discovery properties as another peer sees them."""
    peers = await peer.discover({"role": "worker"})
    (found,) = [p for p in peers if p["peer_id"] == worker_id]
    return dict(found["metadata"]["properties"])
