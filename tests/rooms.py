"""Real pieces on loopback, shared by the integration and fault tests: a restartable signaling server, worker
hosts with test job types, raw peers with an inbox, job clients, and bounded waits.

(`tests/` is on pytest's `pythonpath`, so test modules `from rooms import ...`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
from support.signaling import loopback_config

from fsm_worker.client import ClientTimeouts, JobClient
from fsm_worker.jobs.registry import JobTypeRegistry, StaticCommandHandler, default_registry
from fsm_worker.server.app import RunningServer, start_server
from fsm_worker.shells.signaling import SignalingClient
from fsm_worker.worker import WorkerConfig, WorkerHost

TIMEOUT = 20.0
SCRIPTS = Path(__file__).parent / "scripts"


def job_types(pid_file: Path | None = None) -> JobTypeRegistry:
    """The built-in job types plus the tests' (worker-side configuration, never a client command):
    `ticker` (12 progress lines 0.25 s apart, then `ticks.txt`), `long-ticker` (a minute), `chatty-ticker` (70
    ticks 0.25 s apart, each after 1000 bytes of filler lines), `exit-3` (fails at
    once), `copy` (inputs copied to outputs unchanged), `gpu-probe` (its CUDA_VISIBLE_DEVICES, two at once). With
    `pid_file`, the tickers record their pids there."""
    types = default_registry()
    python = (sys.executable, "-u")
    pids = (str(pid_file),) if pid_file else ()
    types.register("ticker", StaticCommandHandler((*python, str(SCRIPTS / "ticker.py"), "12", "0.25", *pids)))
    types.register(
        "long-ticker", StaticCommandHandler((*python, str(SCRIPTS / "ticker.py"), "240", "0.25", *pids))
    )
    chatty = StaticCommandHandler(
        (*python, str(SCRIPTS / "ticker.py"), "70", "0.25", *pids), {"TICKER_PAD": "1000"}
    )
    types.register("chatty-ticker", chatty)
    types.register(
        "exit-3",
        StaticCommandHandler((*python, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)")),
    )
    types.register("copy", StaticCommandHandler((*python, str(SCRIPTS / "copy_job.py"))))
    # `gpu-probe` (issue 12): waits until 2 probes run at once, then writes the CUDA_VISIBLE_DEVICES it saw
    barrier = (pid_file.parent / f"{pid_file.stem}.barrier") if pid_file else Path("gpu-probe.barrier")
    types.register(
        "gpu-probe", StaticCommandHandler((*python, str(SCRIPTS / "gpu_probe.py"), str(barrier), "2"))
    )
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
        """A started worker host with the test job types; its tickers record pids in `<tmp>/<peer_id>.pids`."""
        options: dict[str, Any] = {
            "workdir": self.tmp / peer_id,
            "gpu_memory_mb": 8192,
            "loopback_only": True,
            "kill_grace": 2.0,
            **overrides,
        }
        config = WorkerConfig(self.url, self.token, peer_id, **options)
        host = WorkerHost(config, job_types(self.tmp / f"{peer_id}.pids"))
        await host.start()
        self.closers.append(host.shutdown)
        return host

    async def peer(self, peer_id: str, token: str | None = None) -> tuple[SignalingClient, Inbox]:
        """A raw peer speaking the protocol by hand, and the inbox of what it receives."""
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
        """Close everything this room made, newest first, then the server."""
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(TIMEOUT):
                    await close()
        await self.stop_server()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = TIMEOUT) -> None:
    """Poll `check` (an observation over the network or of another process) until it holds; fail after `timeout`."""
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


def alive(pid: int) -> bool:
    """Whether `pid` is a live (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")
