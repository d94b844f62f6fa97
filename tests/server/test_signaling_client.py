"""The reusable client connection: queueing, reconnection after a server restart, metadata re-registration."""

from __future__ import annotations

import asyncio
import secrets

from support.signaling import DEFAULT_TIMEOUT as TIMEOUT
from support.signaling import ClientFactory, ServerInfo, loopback_config, wait_until

from fsm_worker.protocol.signaling import merge_metadata, metadata_delta
from fsm_worker.server.app import start_server
from fsm_worker.shells.signaling import QUEUE_FULL, SendStatus, SignalingClient

WORKER_MD = {"tags": ["gpu"], "properties": {"status": "available", "gpu_memory_mb": 16384}}


async def test_server_restart_keeps_ids_and_delivers_queued_messages(make_client: ClientFactory) -> None:
    token = secrets.token_hex(8)
    server = await start_server(loopback_config([token]))
    port = server.port
    try:
        worker, worker_inbox = await make_client(server.url, token, "w1", "worker", WORKER_MD)
        client, client_inbox = await make_client(server.url, token, "c1")
        secret = worker.resume_secret
        assert (await client.send("w1", {"type": "job_request"})).delivered
        assert await worker_inbox.next() == ("c1", {"type": "job_request"})

        await server.stop()
        await wait_until(lambda: not worker.connected and not client.connected)
        sent = [await worker.send("c1", {"type": "job_status", "seq": i}) for i in range(5)]
        assert {r.status for r in sent} == {SendStatus.QUEUED}
        await worker.update_metadata({"properties": {"status": "busy", "job_id": "j1"}})
        assert worker.queued == 5

        server = await start_server(loopback_config([token], port=port))
        await wait_until(lambda: worker.connected and client.connected and worker.queued == 0)
        got = [await client_inbox.next() for _ in range(5)]
        assert got == [("w1", {"type": "job_status", "seq": i}) for i in range(5)]
        assert worker.resume_secret == secret
        [peer] = await client.discover({"role": "worker"})
        assert peer["peer_id"] == "w1"
        assert peer["metadata"]["properties"] == {"status": "busy", "gpu_memory_mb": 16384, "job_id": "j1"}
        assert (await client.send("w1", {"type": "job_cancel"})).delivered
        assert await worker_inbox.next() == ("c1", {"type": "job_cancel"})
    finally:
        await server.stop()


async def test_queued_message_waits_for_its_target_to_come_back(make_client: ClientFactory) -> None:
    token = secrets.token_hex(8)
    server = await start_server(loopback_config([token]))
    port = server.port
    try:
        worker, _ = await make_client(server.url, token, "w1", "worker")
        await server.stop()
        await wait_until(lambda: not worker.connected)
        assert (await worker.send("c1", {"type": "job_complete"})).status is SendStatus.QUEUED
        server = await start_server(loopback_config([token], port=port))
        await wait_until(lambda: worker.connected)
        # the client connects only after the worker is back; the queued message still reaches it
        _, inbox = await make_client(server.url, token, "c1")
        assert await inbox.next() == ("w1", {"type": "job_complete"})
    finally:
        await server.stop()


async def test_send_on_a_closed_client_is_refused_not_raised() -> None:
    client = SignalingClient("http://127.0.0.1:9", "t", "c1")
    await client.close()
    result = await client.send("w1", {"x": 1})
    assert result.status is SendStatus.REFUSED


async def test_callbacks_may_be_async_and_run_in_order(
    signaling_server: ServerInfo, make_client: ClientFactory
) -> None:
    s = signaling_server
    seen: list[int] = []

    async def slow(_from: str, payload: dict[str, object]) -> None:
        await asyncio.sleep(0.001 * (5 - int(str(payload["i"])) % 5))
        seen.append(int(str(payload["i"])))

    hooks: list[str] = []
    worker = SignalingClient(
        s.url, s.token, "w1", "worker", on_peer_message=slow, on_connect=lambda: hooks.append("up")
    )
    await worker.connect(timeout=TIMEOUT)
    try:
        client, _ = await make_client(s.url, s.token, "c1")
        for i in range(20):
            assert (await client.send("w1", {"i": i})).delivered
        await wait_until(lambda: len(seen) == 20)
        assert seen == list(range(20))
        assert hooks == ["up"]
    finally:
        await worker.close()


def test_metadata_delta_round_trips() -> None:
    old = {"tags": ["a"], "properties": {"x": 1, "y": 2}, "extra": 1}
    new = {"properties": {"y": 3, "z": 4}, "other": True}
    assert merge_metadata(old, metadata_delta(old, new)) == {"properties": {"y": 3, "z": 4}, "other": True}


# --- sending never serialises on one ack; what waits for one peer is bounded (issue 10 item 5) --------------


async def test_posts_do_not_wait_for_acks_one_at_a_time(
    signaling_server: ServerInfo, make_client: ClientFactory
) -> None:
    s = signaling_server
    worker, _ = await make_client(s.url, s.token, "w1", "worker")
    _, inbox = await make_client(s.url, s.token, "c1")
    futures = [worker.post("c1", {"type": "job_response", "i": i}) for i in range(200)]
    assert all(not future.done() for future in futures)  # post returns at once, before any ack
    most = 0
    async with asyncio.timeout(TIMEOUT):
        while not all(future.done() for future in futures):
            most = max(most, worker.in_flight)
            await asyncio.sleep(0)
    assert most > 1, "every message waited for the previous one's ack"
    assert most <= 64  # the in-flight window per peer
    assert {future.result().status for future in futures} == {SendStatus.DELIVERED}
    got = [await inbox.next() for _ in range(200)]
    assert got == [("w1", {"type": "job_response", "i": i}) for i in range(200)]  # in order


async def test_a_flooded_peer_gets_bounded_replies_and_others_are_not_held_up(
    make_client: ClientFactory,
) -> None:
    token = secrets.token_hex(8)
    server = await start_server(loopback_config([token]))
    port = server.port
    try:
        worker, _ = await make_client(server.url, token, "w1", "worker", max_queued_per_peer=50)
        await server.stop()
        await wait_until(lambda: not worker.connected)
        flood = [worker.post("ghost", {"type": "job_response", "i": i}) for i in range(500)]
        refused = [f.result() for f in flood if f.done()]
        assert len(refused) == 450 and {r.code for r in refused} == {QUEUE_FULL}
        assert "max_queued_per_peer=50" in str(refused[0].message)
        assert worker.queued == 50
        reply = worker.post("c1", {"type": "job_status"})  # another peer's queue is its own
        assert not reply.done()

        server = await start_server(loopback_config([token], port=port))
        await wait_until(lambda: worker.connected)
        _, inbox = await make_client(server.url, token, "c1")
        assert await inbox.next() == ("w1", {"type": "job_status"})
        async with asyncio.timeout(TIMEOUT):
            assert (await reply).delivered
        assert worker.queued <= 50  # the ghost's messages wait for it (queued_peer_wait), still bounded
    finally:
        await server.stop()


async def test_reconnection_is_python_socketios_with_the_resume_secret_re_read(
    make_client: ClientFactory,
) -> None:
    token = secrets.token_hex(8)
    server = await start_server(loopback_config([token]))
    port = server.port
    try:
        worker, _ = await make_client(server.url, token, "w1", "worker")
        first_secret = worker.resume_secret
        assert first_secret and worker.reconnects == 0
        await server.stop()
        await wait_until(lambda: not worker.connected)
        await worker.update_metadata({"properties": {"status": "busy"}})  # registered by the next auth
        server = await start_server(loopback_config([token], port=port))
        await wait_until(lambda: worker.connected)
        assert worker.reconnects == 1 and worker.resume_secret == first_secret
        client, _ = await make_client(server.url, token, "c1")
        [peer] = await client.discover({"role": "worker"})
        assert peer["metadata"]["properties"] == {"status": "busy"}
    finally:
        await server.stop()
