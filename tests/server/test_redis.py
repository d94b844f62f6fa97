"""Scale-out: server nodes sharing one real redis-server act as one (routing, discovery, identity)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from support.signaling import DEFAULT_TIMEOUT as TIMEOUT
from support.signaling import (
    ClientFactory,
    RedisProcess,
    loopback_config,
    start_server_process,
    wait_until,
)

from fsm_worker.server.app import RunningServer, start_server
from fsm_worker.shells.signaling import SendStatus, SignalingClient, SignalingError

WORKER_MD = {"tags": ["gpu"], "properties": {"status": "available", "gpu_memory_mb": 24576}}


@pytest.fixture
async def two_nodes(redis_server: RedisProcess) -> AsyncIterator[tuple[str, RunningServer, RunningServer]]:
    """Two in-process server nodes on two ports sharing the test's redis-server."""
    token = secrets.token_hex(8)
    a = await start_server(loopback_config([token], redis_url=redis_server.url, node_id="node-a"))
    b = await start_server(loopback_config([token], redis_url=redis_server.url, node_id="node-b"))
    try:
        yield token, a, b
    finally:
        await a.stop()
        await b.stop()


async def test_cross_node_routing_discovery_and_not_found(
    two_nodes: tuple[str, RunningServer, RunningServer], make_client: ClientFactory
) -> None:
    token, a, b = two_nodes
    worker, worker_inbox = await make_client(b.url, token, "w1", "worker", WORKER_MD)
    client, client_inbox = await make_client(a.url, token, "c1")
    found = await client.discover({"role": "worker", "properties": {"gpu_memory_mb": {"$gte": 8192}}})
    assert found == [{"peer_id": "w1", "role": "worker", "metadata": WORKER_MD}]
    assert (await client.send("w1", {"type": "job_request"})).delivered
    assert await worker_inbox.next() == ("c1", {"type": "job_request"})
    assert (await worker.send("c1", {"type": "job_response"})).delivered
    assert await client_inbox.next() == ("w1", {"type": "job_response"})
    assert (await client.send("w2", {})).code == "PEER_NOT_FOUND"

    await worker.update_metadata({"properties": {"status": "busy"}})
    assert await client.discover({"properties": {"status": "available"}}) == []
    await worker.close()  # the server notices the disconnect a moment later
    async with asyncio.timeout(TIMEOUT):
        while (result := await client.send("w1", {"type": "job_cancel"})).delivered:
            await asyncio.sleep(0.02)
    assert (result.status, result.code) == (SendStatus.REFUSED, "PEER_NOT_FOUND")
    assert await client.discover({}) == []


async def test_identity_holds_across_nodes(
    two_nodes: tuple[str, RunningServer, RunningServer], make_client: ClientFactory
) -> None:
    token, a, b = two_nodes
    old, _ = await make_client(a.url, token, "w1", "worker", WORKER_MD)
    thief = SignalingClient(b.url, token, "w1", "worker")
    with pytest.raises(SignalingError) as info:
        await thief.connect(timeout=TIMEOUT)
    assert info.value.code == "PEER_ID_TAKEN"

    # the secret holder resumes on the other node at once; the old socket on node A is dropped
    new, new_inbox = await make_client(
        b.url, token, "w1", "worker", WORKER_MD, resume_secret=old.resume_secret
    )
    await wait_until(lambda: not old.connected)
    client, _ = await make_client(a.url, token, "c1")
    assert (await client.send("w1", {"to": "new"})).delivered
    assert await new_inbox.next() == ("c1", {"to": "new"})
    assert [p["peer_id"] for p in await client.discover({})] == ["w1"]
    assert new.connected


async def test_server_processes_restart_and_crash(
    redis_server: RedisProcess, make_client: ClientFactory
) -> None:
    token = secrets.token_hex(8)
    args = ("--node-ttl", "1")
    node1 = await start_server_process([token], redis_url=redis_server.url, extra_args=args)
    node2 = await start_server_process([token], redis_url=redis_server.url, extra_args=args)
    try:
        worker, _ = await make_client(node1.url, token, "w1", "worker", WORKER_MD)
        client, client_inbox = await make_client(node2.url, token, "c1")
        assert [p["peer_id"] for p in await client.discover({"role": "worker"})] == ["w1"]

        # node 1 stops cleanly and restarts on the same port: the worker resumes its id there and its
        # queued messages reach the client on node 2
        port = node1.url.rsplit(":", 1)[1]
        await node1.stop()
        await wait_until(lambda: not worker.connected)
        assert (await worker.send("c1", {"type": "job_complete"})).status is SendStatus.QUEUED
        assert await client.discover({}) == []
        node1 = await start_server_process(
            [token], redis_url=redis_server.url, port=int(port), extra_args=args
        )
        await wait_until(lambda: worker.connected)
        assert await client_inbox.next() == ("w1", {"type": "job_complete"})

        # node 1 crashes (no clean release): after its heartbeat expires its peers vanish everywhere
        await node1.kill()
        await wait_until(lambda: not worker.connected)
        async with asyncio.timeout(TIMEOUT):
            while await client.discover({}) or (await client.send("w1", {})).code != "PEER_NOT_FOUND":
                await asyncio.sleep(0.1)
    finally:
        await node1.stop()
        await node2.stop()
