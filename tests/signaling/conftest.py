"""Fixtures: a real signaling server on loopback, a real redis-server, and client factories."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest
import socketio

from fsm_worker.signaling.client import SignalingClient
from fsm_worker.signaling.server import RunningServer
from fsm_worker.signaling.testing import RedisProcess, loopback_config, redis_server_binary, start_redis

TIMEOUT = 10.0


@attrs.define
class ServerInfo:
    """What the ``signaling_server`` fixture yields."""

    url: str
    token: str
    running: RunningServer


@pytest.fixture
async def signaling_server() -> AsyncIterator[ServerInfo]:
    """A fresh in-memory server on a free loopback port with one random token."""
    token = secrets.token_urlsafe(16)
    from fsm_worker.signaling.server import start_server

    running = await start_server(loopback_config([token]))
    try:
        yield ServerInfo(running.url, token, running)
    finally:
        await running.stop()


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisProcess]:
    """A private redis-server on a free port (skipped only if the binary is missing)."""
    if redis_server_binary() is None:
        pytest.skip("redis-server binary not installed (apt-get install redis-server)")
    redis = await start_redis()
    try:
        yield redis
    finally:
        redis.stop()


class Inbox:
    """Collects delivered peer messages; ``await inbox.next()`` waits for one."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def __call__(self, from_peer_id: str, payload: dict[str, Any]) -> None:
        self.queue.put_nowait((from_peer_id, payload))

    async def next(self, timeout: float = TIMEOUT) -> tuple[str, dict[str, Any]]:
        async with asyncio.timeout(timeout):
            return await self.queue.get()


ClientFactory = Callable[..., Awaitable[tuple[SignalingClient, Inbox]]]


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    """``await make_client(url, token, peer_id, role="client", metadata=None, **kw)`` → connected client and inbox."""
    clients: list[SignalingClient] = []

    async def make(
        url: str, token: str, peer_id: str, role: str = "client", metadata: dict[str, Any] | None = None, **kw: Any
    ) -> tuple[SignalingClient, Inbox]:
        inbox = Inbox()
        kw.setdefault("backoff_initial", 0.05)
        kw.setdefault("backoff_max", 0.5)
        client = SignalingClient(url, token, peer_id, role, metadata, on_peer_message=inbox, **kw)
        clients.append(client)
        await client.connect(timeout=TIMEOUT)
        return client, inbox

    yield make
    for client in clients:
        async with asyncio.timeout(TIMEOUT):
            await client.close()


@contextlib.asynccontextmanager
async def raw_client(url: str, auth: Any) -> AsyncIterator[socketio.AsyncClient]:
    """A bare python-socketio client (no validation on our side) for hostile-input tests."""
    sio = socketio.AsyncClient(reconnection=False)
    async with asyncio.timeout(TIMEOUT):
        await sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=5)
    try:
        yield sio
    finally:
        async with asyncio.timeout(TIMEOUT):
            await sio.disconnect()


def auth_for(token: str, peer_id: str, role: str = "client", **extra: Any) -> dict[str, Any]:
    """A valid auth dict."""
    return {"token": token, "peer_id": peer_id, "role": role, "metadata": {}, **extra}
