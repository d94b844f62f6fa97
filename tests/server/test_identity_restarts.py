"""Identity and the registry across restarts and stalls (issue 10, items 11, 12, 13), with real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.configured_server import start_configured_server
from support.signaling import DEFAULT_TIMEOUT as TIMEOUT
from support.signaling import (
    ClientFactory,
    RedisProcess,
    ServerProcess,
    redis_server_binary,
    start_redis,
    wait_until,
)

from fsm_worker.shells.signaling import SignalingClient, SignalingError

WORKER_MD = {"tags": ["gpu"], "properties": {"status": "available"}}


def port_of(proc: ServerProcess) -> int:
    return int(proc.url.rsplit(":", 1)[1])


async def refused_code(url: str, token: str, peer_id: str, **kw: Any) -> str:
    thief = SignalingClient(url, token, peer_id, "worker", **kw)
    try:
        with pytest.raises(SignalingError) as info:
            await thief.connect(timeout=TIMEOUT)
    finally:
        await thief.close()
    return info.value.code


async def test_secret_holder_gets_its_id_back_after_a_server_restart(
    tmp_path: Path, make_client: ClientFactory
) -> None:
    token, key_file = secrets.token_hex(8), str(tmp_path / "resume.key")
    srv = await start_configured_server([token], resume_key_file=key_file)
    try:
        worker, _ = await make_client(srv.url, token, "gpu-worker-1", "worker", WORKER_MD)
        secret = worker.resume_secret
        assert secret
        await worker.close()
        port = port_of(srv)
        await srv.kill()  # the in-memory registry is gone
        srv = await start_configured_server([token], resume_key_file=key_file, port=port)
        # someone claims the id first: the server cannot know it had a holder, so it lets the claim in ...
        squatter, squatter_inbox = await make_client(srv.url, token, "gpu-worker-1", "worker")
        # ... and the holder of the secret takes it back at once
        back, back_inbox = await make_client(srv.url, token, "gpu-worker-1", "worker", resume_secret=secret)
        assert back.resume_secret == secret
        await wait_until(lambda: not squatter.connected)
        client, _ = await make_client(srv.url, token, "c1")
        assert (await client.send("gpu-worker-1", {"type": "job_request"})).delivered
        assert await back_inbox.next() == ("c1", {"type": "job_request"})
        assert squatter_inbox.queue.empty()
        # nobody else can take it now: not without a secret, not with a forged one
        assert await refused_code(srv.url, token, "gpu-worker-1") == "PEER_ID_TAKEN"
        forged = secrets.token_urlsafe(43)
        assert await refused_code(srv.url, token, "gpu-worker-1", resume_secret=forged) == "PEER_ID_TAKEN"
    finally:
        await srv.stop()


@pytest.fixture
async def persistent_redis() -> AsyncIterator[RedisProcess]:
    if redis_server_binary() is None:
        pytest.skip("redis-server binary not installed (apt-get install redis-server)")
    redis = await start_redis(persist=True)
    try:
        yield redis
    finally:
        redis.stop()


async def two_nodes(redis_url: str, token: str, key: str) -> tuple[ServerProcess, ServerProcess]:
    common: dict[str, Any] = {
        "redis_url": redis_url,
        "resume_key": key,
        "node_ttl_seconds": 2.0,
        "redis_timeout_seconds": 0.5,
    }
    a = await start_configured_server([token], node_id="node-a", **common)
    b = await start_configured_server([token], node_id="node-b", **common)
    return a, b


async def test_redis_restart_under_two_nodes_republishes_live_peers(
    redis_server: RedisProcess, make_client: ClientFactory
) -> None:
    token, key = secrets.token_hex(8), secrets.token_hex(32)
    a, b = await two_nodes(redis_server.url, token, key)
    redis = redis_server
    try:
        worker, worker_inbox = await make_client(a.url, token, "w1", "worker", WORKER_MD)
        client, _ = await make_client(b.url, token, "c1")
        assert [p["peer_id"] for p in await client.discover({"role": "worker"})] == ["w1"]

        redis.stop(keep_data=True)  # no persistence: Redis comes back empty
        redis = await start_redis(port=redis.port, workdir=redis.workdir)
        # an impostor tries the worker's id on the other node right away
        impostor = SignalingClient(b.url, token, "w1", "worker", backoff_initial=0.05, backoff_max=0.2)
        try:
            with contextlib.suppress(SignalingError):  # it may lose the race at once
                await impostor.connect(timeout=TIMEOUT)
            # the worker's socket never dropped: node A notices Redis came back and publishes it again.
            # (Redis pub/sub is not durable: what is routed before node A has subscribed again is lost, so
            # keep sending until one arrives.)
            async with asyncio.timeout(TIMEOUT):
                seq = 0
                while True:
                    peers = await safe_discover(client)
                    if [p["peer_id"] for p in peers] == ["w1"] and not impostor.connected:
                        seq += 1
                        if (await client.send("w1", {"type": "job_request", "seq": seq})).delivered:
                            with contextlib.suppress(TimeoutError):
                                sender, payload = await worker_inbox.next(timeout=0.5)
                                assert sender == "c1" and payload["type"] == "job_request"
                                break
                    await asyncio.sleep(0.1)
            assert worker.connected and peers[0]["metadata"] == WORKER_MD
            assert await refused_code(b.url, token, "w1") == "PEER_ID_TAKEN"
        finally:
            await impostor.close()
    finally:
        await a.stop()
        await b.stop()
        redis.stop()


async def test_a_peer_that_left_during_a_redis_outage_is_not_shown_afterwards(
    persistent_redis: RedisProcess, make_client: ClientFactory
) -> None:
    token, key = secrets.token_hex(8), secrets.token_hex(32)
    redis = persistent_redis
    a, b = await two_nodes(redis.url, token, key)
    try:
        worker, _ = await make_client(a.url, token, "w1", "worker", WORKER_MD)
        client, _ = await make_client(b.url, token, "c1")
        assert [p["peer_id"] for p in await client.discover({"role": "worker"})] == ["w1"]
        redis.stop(keep_data=True)  # Redis goes down with the worker registered ...
        await worker.close()  # ... the worker leaves while it is down: the release cannot be written
        await asyncio.sleep(1.0)
        redis = await start_redis(port=redis.port, workdir=redis.workdir, persist=True)  # back, old data
        async with asyncio.timeout(TIMEOUT):
            while (await safe_discover(client, default=[{"peer_id": "?"}])) or (
                await client.send("w1", {"type": "job_request"})
            ).code != "PEER_NOT_FOUND":
                await asyncio.sleep(0.1)
    finally:
        await a.stop()
        await b.stop()
        redis.stop()


async def test_a_peer_that_left_during_a_redis_stall_is_not_shown_afterwards(
    redis_server: RedisProcess, make_client: ClientFactory
) -> None:
    token, key = secrets.token_hex(8), secrets.token_hex(32)
    a, b = await two_nodes(redis_server.url, token, key)
    try:
        worker, _ = await make_client(a.url, token, "w1", "worker", WORKER_MD)
        client, _ = await make_client(b.url, token, "c1")
        assert [p["peer_id"] for p in await client.discover({"role": "worker"})] == ["w1"]
        os.kill(redis_server.process.pid, signal.SIGSTOP)
        try:
            await worker.close()
            await asyncio.sleep(2.0)  # longer than redis_timeout_seconds: node A's release fails
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)
        async with asyncio.timeout(TIMEOUT):
            while (await safe_discover(client, default=[{"peer_id": "?"}])) or (
                await client.send("w1", {"type": "job_request"})
            ).code != "PEER_NOT_FOUND":
                await asyncio.sleep(0.1)
    finally:
        await a.stop()
        await b.stop()


async def safe_discover(client: SignalingClient, default: list[Any] | None = None) -> list[dict[str, Any]]:
    """Discovery that reads a refusal (Redis still coming back) as ``default``."""
    try:
        return await client.discover({"role": "worker"})
    except SignalingError:
        return list(default or [])
