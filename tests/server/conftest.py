"""Fixtures: a real signaling server on loopback, a real redis-server, and a client factory.

The helpers behind them live in :mod:`support.signaling` so other test areas can reuse them.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.signaling import (
    DEFAULT_TIMEOUT,
    ClientFactory,
    Inbox,
    RedisProcess,
    ServerInfo,
    loopback_config,
    redis_server_binary,
    start_redis,
)

from fsm_worker.server.app import start_server
from fsm_worker.shells.signaling import SignalingClient


@pytest.fixture
async def signaling_server() -> AsyncIterator[ServerInfo]:
    """A fresh in-memory server on a free loopback port with one random token."""
    token = secrets.token_hex(16)
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


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    """``await make_client(url, token, peer_id, role="client", metadata=None, **kw)`` → connected client, inbox."""
    clients: list[SignalingClient] = []

    async def make(
        url: str,
        token: str,
        peer_id: str,
        role: str = "client",
        metadata: dict[str, Any] | None = None,
        **kw: Any,
    ) -> tuple[SignalingClient, Inbox]:
        inbox = Inbox()
        kw.setdefault("backoff_initial", 0.05)
        kw.setdefault("backoff_max", 0.5)
        client = SignalingClient(url, token, peer_id, role, metadata, on_peer_message=inbox, **kw)
        clients.append(client)
        await client.connect(timeout=DEFAULT_TIMEOUT)
        return client, inbox

    yield make
    for client in clients:
        async with asyncio.timeout(DEFAULT_TIMEOUT):
            await client.close()
