"""Helpers to run real signaling servers and a real ``redis-server`` in tests and benchmarks (loopback only)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import redis.asyncio as aioredis
import socketio

from fsm_worker.server.app import RunningServer, start_server
from fsm_worker.server.config import ServerConfig
from fsm_worker.shells.signaling import SignalingClient

REDIS_SERVER_CANDIDATES = ("/usr/bin/redis-server", "/usr/local/bin/redis-server")


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str | None:
    """Path of ``redis-server`` if installed."""
    found = shutil.which("redis-server")
    return found or next((p for p in REDIS_SERVER_CANDIDATES if os.access(p, os.X_OK)), None)


@attrs.define
class RedisProcess:
    """A private ``redis-server`` on a free loopback port (no persistence)."""

    process: subprocess.Popen[bytes]
    port: int
    workdir: str

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self, *, keep_data: bool = False) -> None:
        """Terminate and wait (``keep_data``: leave the data directory for a restart)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if not keep_data:
            shutil.rmtree(self.workdir, ignore_errors=True)


async def start_redis(
    timeout: float = 10.0, *, port: int | None = None, workdir: str | None = None, persist: bool = False
) -> RedisProcess:
    """Start ``redis-server`` and wait until it answers PING. Raises RuntimeError if it is not installed.

    ``port`` / ``workdir`` restart one on the same port and data; ``persist`` writes an fsync'ed AOF there.
    """
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = port or free_port()
    workdir = workdir or tempfile.mkdtemp(prefix="fsm-redis-")
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if persist else ["--appendonly", "no"]
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *persistence]
    cmd += ["--dir", workdir, "--protected-mode", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    redis = RedisProcess(proc, port, workdir)
    client = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        async with asyncio.timeout(timeout):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {proc.returncode}")
                with contextlib.suppress(OSError, aioredis.ConnectionError):
                    if await client.ping():
                        break
                await asyncio.sleep(0.05)
    except BaseException:
        redis.stop()
        raise
    finally:
        await client.aclose()
    return redis


def loopback_config(tokens: Sequence[str] | None = None, **overrides: Any) -> ServerConfig:
    """A loopback, port-0 configuration with short grace periods."""
    options: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "resume_grace_seconds": 5.0}
    options.update(overrides)
    return ServerConfig(tokens=list(tokens or [secrets.token_hex(16)]), **options)


@contextlib.asynccontextmanager
async def running_server(config: ServerConfig) -> AsyncIterator[RunningServer]:
    """Start a server in this event loop and stop it afterwards."""
    server = await start_server(config)
    try:
        yield server
    finally:
        await server.stop()


@attrs.define
class ServerProcess:
    """A signaling server node in a child process (``python -m fsm_worker.server``)."""

    process: asyncio.subprocess.Process
    url: str

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then wait (SIGKILL if it does not exit)."""
        if self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(timeout):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def kill(self) -> None:
        """SIGKILL (a crash: no clean release)."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def start_server_process(
    tokens: Sequence[str],
    *,
    redis_url: str | None = None,
    port: int = 0,
    grace: float = 5.0,
    log_level: str = "WARNING",
    extra_args: Sequence[str] = (),
    module: str = "fsm_worker.server",
    timeout: float = 20.0,
) -> ServerProcess:
    """Start a server process and wait for its ``LISTENING <url>`` line."""
    cmd = [sys.executable, "-m", module, "--port", str(port), "--grace", str(grace), "--log-level", log_level]
    for token in tokens:
        cmd += [f"--token={token}"]  # a token may start with "-"
    if redis_url:
        cmd += ["--redis", redis_url]
    cmd += list(extra_args)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"server process exited before listening (rc={await proc.wait()})")
                if line.startswith("LISTENING "):
                    return ServerProcess(proc, line.split()[1])
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise


# -- test-side helpers ------------------------------------------------------------------------------------------

DEFAULT_TIMEOUT = 10.0


@attrs.define
class ServerInfo:
    """A running in-process server as the ``signaling_server`` fixture yields it."""

    url: str
    token: str
    running: RunningServer


class Inbox:
    """A ``on_peer_message`` callback collecting deliveries; ``await inbox.next()`` waits for one."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def __call__(self, from_peer_id: str, payload: dict[str, Any]) -> None:
        self.queue.put_nowait((from_peer_id, payload))

    async def next(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[str, dict[str, Any]]:
        """The next delivered ``(from_peer_id, payload)``."""
        async with asyncio.timeout(timeout):
            return await self.queue.get()


ClientFactory = Callable[..., Awaitable[tuple[SignalingClient, Inbox]]]


async def wait_until(predicate: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT) -> None:
    """Poll ``predicate`` until true (raises TimeoutError)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def raw_client(
    url: str, auth: Any, timeout: float = DEFAULT_TIMEOUT
) -> AsyncIterator[socketio.AsyncClient]:
    """A bare python-socketio client (no validation on our side), for hostile-input tests."""
    sio = socketio.AsyncClient(reconnection=False)
    async with asyncio.timeout(timeout):
        await sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=5)
    try:
        yield sio
    finally:
        async with asyncio.timeout(timeout):
            await sio.disconnect()


def auth_for(token: str, peer_id: str, role: str = "client", **extra: Any) -> dict[str, Any]:
    """A valid connect auth dict."""
    return {"token": token, "peer_id": peer_id, "role": role, "metadata": {}, **extra}
