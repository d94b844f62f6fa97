"""Real aiortc peers on loopback, SDP passed directly (no signaling server), file helpers, and the fixtures
that hand them to tests (conftests import the fixtures: importlib mode cannot import a conftest)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiortc import RTCDataChannel, RTCPeerConnection

from fsm_worker.shells.rtc import (
    IncomingChannel,
    accept_answer,
    create_answer,
    create_offer,
    enable_loopback_candidates,
    make_configuration,
    wait_channel_open,
)

STEP_TIMEOUT = 20.0


@attrs.define
class Link:
    """Two connected peer connections with one open data channel."""

    client_pc: RTCPeerConnection
    worker_pc: RTCPeerConnection
    client: RTCDataChannel
    worker: RTCDataChannel

    async def close(self) -> None:
        async with asyncio.timeout(STEP_TIMEOUT):
            await self.client_pc.close()
            await self.worker_pc.close()


async def open_link(timeout: float = STEP_TIMEOUT) -> Link:
    """Offer → answer → open channel on both sides, loopback only."""
    enable_loopback_candidates(exclusive=True)
    client_pc = RTCPeerConnection(make_configuration())
    worker_pc = RTCPeerConnection(make_configuration())
    incoming = IncomingChannel(worker_pc)
    client_channel, offer = await create_offer(client_pc, timeout=timeout)
    answer = await create_answer(worker_pc, offer, timeout=timeout)
    await accept_answer(client_pc, answer, timeout=timeout)
    worker_channel = await incoming.wait_open(timeout=timeout)
    await wait_channel_open(client_pc, client_channel, timeout=timeout)
    return Link(client_pc, worker_pc, client_channel, worker_channel)


def make_file(path: Path, size: int, seed: int = 0) -> str:
    """Write ``size`` pseudo-random bytes (in blocks) and return their sha256."""
    hasher = hashlib.sha256()
    block = hashlib.sha256(str(seed).encode()).digest() * 2048 + os.urandom(16)  # ~64 KiB, seeded-ish
    with path.open("wb") as f:
        remaining = size
        counter = 0
        while remaining:
            data = (counter.to_bytes(8, "big") + block)[:remaining]
            f.write(data)
            hasher.update(data)
            remaining -= len(data)
            counter += 1
    return hasher.hexdigest()


def sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            hasher.update(block)
    return hasher.hexdigest()


class RawPeer:
    """Speaks raw frames on a channel (to send what a well-behaved client never would)."""

    def __init__(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        channel.on("message", self._on_message)

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.replies.put_nowait(json.loads(message))

    def send(self, frame: dict[str, Any] | str | bytes) -> None:
        self.channel.send(json.dumps(frame) if isinstance(frame, dict) else frame)

    async def reply(self) -> dict[str, Any]:
        async with asyncio.timeout(STEP_TIMEOUT):
            return await self.replies.get()


@attrs.frozen
class Tools:
    """Helpers handed to tests as a fixture (importlib mode cannot import conftest)."""

    make_file: Callable[[Path, int, int], str] = make_file
    sha256_file: Callable[[Path], str] = sha256_file
    raw_peer: type[RawPeer] = RawPeer


@pytest.fixture
async def link_factory() -> AsyncIterator[Callable[[], Awaitable[Link]]]:
    """Opens links on demand and closes all of them at the end of the test."""
    links: list[Link] = []

    async def make() -> Link:
        link = await open_link()
        links.append(link)
        return link

    yield make
    for link in links:
        await link.close()


@pytest.fixture
async def link(link_factory: Callable[[], Awaitable[Link]]) -> Link:
    return await link_factory()


@pytest.fixture
def tools() -> Tools:
    return Tools()
