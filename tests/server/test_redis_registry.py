"""The Redis registry of two nodes against one real redis-server, below the Socket.IO servers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from support.signaling import RedisProcess

from fsm_worker.server.redis_registry import RedisRegistry
from fsm_worker.server.registry import ClaimKind, ClaimRequest

ROOM = "room-1"


def claim(peer_id: str, sid: str) -> ClaimRequest:
    return ClaimRequest(ROOM, peer_id, sid, "worker", {}, presented_hash=None, secret_hash=f"hash-{sid}")


class Node:
    """One node's registry and the sids it was told to disconnect."""

    def __init__(self, url: str, node_id: str) -> None:
        self.evicted: list[str] = []
        self.registry = RedisRegistry(url, node_id, grace=5.0, node_ttl=3600.0, on_evict=self.on_evict)

    async def on_evict(self, sid: str) -> None:
        self.evicted.append(sid)


@pytest.fixture
async def raw(redis_server: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    """A plain client of the same redis-server: what a restart erases, and what Redis then holds."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def nodes(redis_server: RedisProcess) -> AsyncIterator[tuple[Node, Node]]:
    a, b = Node(redis_server.url, "node-a"), Node(redis_server.url, "node-b")
    await a.registry.start()  # the heartbeat loop sleeps node_ttl / 4: these tests call its steps themselves
    await b.registry.start()
    try:
        yield a, b
    finally:
        await a.registry.close()
        await b.registry.close()


async def test_a_blind_claimant_whose_eviction_message_was_lost_is_dropped_by_its_own_node(
    nodes: tuple[Node, Node], raw: aioredis.Redis
) -> None:
    a, b = nodes
    assert (await a.registry.claim(claim("w1", "sid-a"), 1000.0)).kind is ClaimKind.NEW
    await raw.flushall()  # Redis restarted empty: node A's worker is still connected
    for node in (a, b):  # both heartbeats reach the new Redis (the loop's own step, taken here)
        await node.registry._beat()
    # An impostor takes the id on node B before node A has re-published it: the claim is blind.
    assert (await b.registry.claim(claim("w1", "sid-b"), 1001.0)).kind is ClaimKind.NEW
    assert await b.registry.drop_lost_ids() == 0, "node B holds the id for now"
    await a.registry.reconcile(forgotten=True)  # the older lineage wins the id back ...
    assert a.evicted == ["sid-b"]  # ... and asks for sid-b's disconnect, a message node B may never get
    assert b.evicted == []
    assert await b.registry.drop_lost_ids() == 1
    assert b.evicted == ["sid-b"], "node B drops its own session once Redis names another"
    assert await b.registry.drop_lost_ids() == 0 and b.evicted == ["sid-b"]
    assert await a.registry.drop_lost_ids() == 0 and a.evicted == ["sid-b"]
    assert [p.peer_id for p in await b.registry.peers(ROOM)] == ["w1"]
    stored = json.loads(str(await raw.hget(f"fsm_worker:sess:{ROOM}", "w1")))
    assert (stored["sid"], stored["node"]) == ("sid-a", "node-a")


async def test_an_id_that_redis_forgot_is_not_dropped(nodes: tuple[Node, Node], raw: aioredis.Redis) -> None:
    a, _ = nodes
    await a.registry.claim(claim("w1", "sid-a"), 1000.0)
    await raw.flushall()
    assert await a.registry.drop_lost_ids() == 0 and a.evicted == [], (
        "no record is no loss: it is re-published"
    )
    await a.registry.reconcile(forgotten=True)
    assert [p.peer_id for p in await a.registry.peers(ROOM)] == ["w1"]
