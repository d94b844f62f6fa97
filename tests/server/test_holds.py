"""The room-wide hold cap at the server (issue 10 item 8): the book, and the `hold` op over a real server."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.configured_server import start_configured_server
from support.signaling import DEFAULT_TIMEOUT, ClientFactory, RedisProcess, ServerInfo, loopback_config

from fsm_worker.protocol.errors import SignalingCode, SignalingRefusal
from fsm_worker.protocol.signaling import HoldClaim, room_for_token
from fsm_worker.protocol.worker.hold_events import hold_ref
from fsm_worker.server.app import start_server
from fsm_worker.server.holds import HoldBook
from fsm_worker.shells.signaling import SignalingError

REF1, REF2, REF3 = hold_ref("job-1"), hold_ref("job-2"), hold_ref("job-3")


async def test_the_book_counts_per_client_across_workers_and_names_the_cap() -> None:
    book = HoldBook(max_per_client=2, max_per_worker=8, grace=5.0)
    assert await book.claim("r", "w1", "greedy", REF1, 0.0) == 1
    assert await book.claim("r", "w2", "greedy", REF2, 0.0) == 2
    with pytest.raises(SignalingRefusal) as refused:
        await book.claim("r", "w3", "greedy", REF3, 0.0)
    assert refused.value.code is SignalingCode.HOLD_LIMIT
    assert "max_holds_per_client (2)" in refused.value.message
    assert await book.count("r", "greedy", 0.0) == 2, "a refused claim changes nothing"
    assert await book.claim("r", "w3", "honest", REF3, 0.0) == 1
    assert await book.count("other-room", "greedy", 0.0) == 0


async def test_a_repeated_claim_counts_once_and_release_is_idempotent() -> None:
    book = HoldBook(max_per_client=2, max_per_worker=8, grace=5.0)
    for _ in range(5):
        assert await book.claim("r", "w1", "c", REF1, 0.0) == 1
    await book.release("r", "w1", REF1)
    await book.release("r", "w1", REF1)
    await book.release("r", "w2", REF2)  # never held
    assert await book.count("r", "c", 0.0) == 0


async def test_a_worker_releases_only_its_own_holds() -> None:
    book = HoldBook(max_per_client=4, max_per_worker=8, grace=5.0)
    await book.claim("r", "w1", "c", REF1, 0.0)
    await book.release("r", "w2", REF1)  # the same ref, another worker
    assert await book.count("r", "c", 0.0) == 1


async def test_a_worker_cannot_claim_more_than_its_own_cap() -> None:
    book = HoldBook(max_per_client=0, max_per_worker=2, grace=5.0)
    await book.claim("r", "w1", "a", REF1, 0.0)
    await book.claim("r", "w1", "b", REF2, 0.0)
    with pytest.raises(SignalingRefusal, match=r"max_holds_per_worker \(2\)"):
        await book.claim("r", "w1", "c", REF3, 0.0)


async def test_a_departed_workers_holds_count_through_its_grace_then_go() -> None:
    book = HoldBook(max_per_client=2, max_per_worker=8, grace=5.0)
    await book.claim("r", "w1", "c", REF1, 0.0)
    book.worker_left("r", "w1", 1.0)
    assert await book.count("r", "c", 5.9) == 1
    book.worker_back("r", "w1")  # resumed: nothing is dropped
    assert await book.count("r", "c", 100.0) == 1
    book.worker_left("r", "w1", 100.0)
    assert await book.count("r", "c", 105.0) == 0


async def test_a_sync_replaces_the_workers_set() -> None:
    book = HoldBook(max_per_client=1, max_per_worker=8, grace=5.0)
    await book.claim("r", "w1", "c", REF1, 0.0)
    await book.sync("r", "w1", (HoldClaim("c", REF2), HoldClaim("d", REF3)))
    assert await book.count("r", "c", 0.0) == 1 and await book.count("r", "d", 0.0) == 1
    await book.sync("r", "w1", ())
    assert await book.count("r", "c", 0.0) == await book.count("r", "d", 0.0) == 0


@pytest.fixture
async def capped() -> AsyncIterator[ServerInfo]:
    token = secrets.token_hex(16)
    running = await start_server(loopback_config([token], max_holds_per_client=2, resume_grace_seconds=0.5))
    try:
        yield ServerInfo(running.url, token, running)
    finally:
        await running.stop()


async def test_hold_over_a_real_server(capped: ServerInfo, make_client: ClientFactory) -> None:
    workers = [(await make_client(capped.url, capped.token, f"w{n}", "worker"))[0] for n in range(3)]
    assert all(w.holds_offered for w in workers)
    for n, worker in enumerate(workers[:2]):
        ack = await worker.hold({"client": "greedy", "job_ref": hold_ref(f"job-{n}"), "held": True})
        assert ack == {"ok": True, "held": n + 1}
    with pytest.raises(SignalingError) as refused:
        await workers[2].hold({"client": "greedy", "job_ref": hold_ref("job-2"), "held": True})
    assert refused.value.code == "HOLD_LIMIT" and "max_holds_per_client (2)" in str(refused.value)
    # a worker that leaves for good: its holds stop counting when its grace ends
    await workers[0].close()
    book = capped.running.server.holds
    assert book is not None
    room = room_for_token(capped.token)
    async with asyncio.timeout(DEFAULT_TIMEOUT):
        while await book.count(room, "greedy", time.time()) != 1:
            await asyncio.sleep(0.05)
    ack = await workers[2].hold({"client": "greedy", "job_ref": hold_ref("job-2"), "held": True})
    assert ack["held"] == 2


async def test_only_workers_may_hold_and_malformed_holds_are_refused(
    capped: ServerInfo, make_client: ClientFactory
) -> None:
    client, _ = await make_client(capped.url, capped.token, "c1")
    assert not client.holds_offered
    with pytest.raises(SignalingError) as refused:
        await client.hold({"client": "c2", "job_ref": REF1, "held": True})
    assert refused.value.code == "NOT_A_WORKER"
    worker, _ = await make_client(capped.url, capped.token, "w1", "worker")
    bad: list[Any] = [
        {"client": "c2", "job_ref": "job-1", "held": True},  # not a hash: a job id
        {"client": "", "job_ref": REF1},
        {"client": "c2", "job_ref": REF1, "held": "yes"},
        {"client": "c2", "job_ref": REF1, "worker": "w9"},  # the worker is the connection's, never a field
        {"sync": "all"},
        {"sync": [{"client": "c2", "job_ref": REF1}] * 300},
    ]
    for payload in bad:
        with pytest.raises(SignalingError) as refused:
            await worker.hold(payload)
        assert refused.value.code in ("INVALID_MESSAGE", "HOLD_LIMIT"), payload
    book = capped.running.server.holds
    assert isinstance(book, HoldBook) and not book._by_worker, "a refused hold changes nothing"


async def test_a_server_without_the_cap_does_not_offer_holds(make_client: ClientFactory) -> None:
    token = secrets.token_hex(16)
    running = await start_server(loopback_config([token], max_holds_per_client=0))
    try:
        worker, _ = await make_client(running.url, token, "w1", "worker")
        assert not worker.holds_offered
        with pytest.raises(SignalingError) as refused:
            await worker.hold({"client": "c", "job_ref": REF1, "held": True})
        assert refused.value.code == "UNKNOWN_EVENT" and "max_holds_per_client = 0" in str(refused.value)
    finally:
        await running.stop()


async def test_redis_counts_holds_across_nodes_and_forgets_a_dead_nodes_workers(
    redis_server: RedisProcess, make_client: ClientFactory
) -> None:
    token = secrets.token_hex(8)
    common: dict[str, Any] = {
        "redis_url": redis_server.url, "resume_key": secrets.token_hex(32), "node_ttl_seconds": 1.0,
        "resume_grace_seconds": 0.5, "redis_timeout_seconds": 0.5, "max_holds_per_client": 2,
    }  # fmt: skip
    a = await start_configured_server([token], node_id="node-a", **common)
    b = await start_configured_server([token], node_id="node-b", **common)
    try:
        w1, _ = await make_client(a.url, token, "w1", "worker")
        w2, _ = await make_client(b.url, token, "w2", "worker")
        w3, _ = await make_client(b.url, token, "w3", "worker")
        assert w1.holds_offered and w2.holds_offered
        claim = {"client": "greedy", "held": True}
        assert (await w1.hold({**claim, "job_ref": REF1}))["held"] == 1
        assert (await w1.hold({**claim, "job_ref": REF1}))["held"] == 1  # the same claim again: once
        assert (await w2.hold({**claim, "job_ref": REF2}))["held"] == 2  # on the other node: the same count
        with pytest.raises(SignalingError) as refused:
            await w3.hold({**claim, "job_ref": REF3})
        assert refused.value.code == "HOLD_LIMIT" and "max_holds_per_client (2)" in str(refused.value)
        # a release on one node frees the count on every node
        assert (await w2.hold({"client": "greedy", "job_ref": REF2, "held": False}))["held"] == 1
        assert (await w3.hold({**claim, "job_ref": REF3}))["held"] == 2
        # node A dies with w1: once its heartbeat is node_ttl old and the grace has passed, w1's hold goes
        await a.kill()
        async with asyncio.timeout(DEFAULT_TIMEOUT):
            while True:
                try:
                    assert (await w2.hold({**claim, "job_ref": REF2}))["held"] == 2
                    break
                except SignalingError as exc:
                    assert exc.code == "HOLD_LIMIT"
                    await asyncio.sleep(0.2)
        # a worker's sync replaces its holds: w3 (on B) lets its own go, nobody else's
        await w3.hold({"sync": []})
        assert (await w2.hold({**claim, "job_ref": REF1}))["held"] == 2
    finally:
        await a.stop()
        await b.stop()
