"""What one connection may cost the room (issue 10, items 5, 6, 7, 10, 14, 15), against real server processes."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import engineio
import pytest
import socketio
from support.configured_server import start_configured_server
from support.raw_ws import RawSocketIO
from support.signaling import DEFAULT_TIMEOUT as TIMEOUT
from support.signaling import ClientFactory, ServerProcess, auth_for, raw_client, wait_until

from fsm_worker.shells.signaling import SendStatus, SignalingClient, SignalingError

Start = Callable[..., Awaitable[tuple[ServerProcess, str]]]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Start]:
    """``await node(**config_fields)`` → a fresh server process and its token (stopped afterwards)."""
    started: list[ServerProcess] = []

    async def start(**fields: Any) -> tuple[ServerProcess, str]:
        token = secrets.token_hex(8)
        fields.setdefault("resume_key_file", str(tmp_path / "resume.key"))
        proc = await start_configured_server([token], **fields)
        started.append(proc)
        return proc, token

    yield start
    for proc in started:
        await proc.stop()


async def test_a_flooding_connection_is_rate_limited_and_the_refusal_names_the_limit(
    node: Start, make_client: ClientFactory
) -> None:
    srv, token = await node(rate_limit_events_per_second=20, rate_limit_burst=20)
    worker, inbox = await make_client(srv.url, token, "w1", "worker")
    async with raw_client(srv.url, auth_for(token, "flooder")) as sio:
        request = {"to_peer_id": "w1", "payload": {"type": "job_request"}}
        started = time.monotonic()
        acks = await asyncio.gather(*(sio.call("peer_message", request, timeout=TIMEOUT) for _ in range(300)))
        elapsed = time.monotonic() - started
        refused = [a for a in acks if not a["ok"]]
        # the bucket's bound, whatever the machine's speed: burst + rate x elapsed
        assert 300 - len(refused) <= 20 + 20 * elapsed + 1, (len(refused), elapsed)
        assert refused
        assert {a["code"] for a in refused} == {"RATE_LIMITED"}
        assert "rate_limit_events_per_second=20" in refused[0]["message"]
        assert "rate_limit_burst=20" in refused[0]["message"]
        delivered = sum(1 for a in acks if a["ok"])
        got = [await inbox.next() for _ in range(delivered)]
        assert len(got) == delivered and inbox.queue.empty()  # refused ones never reached the worker
        await asyncio.sleep(0.3)  # the bucket refills: the same connection is served again
        assert await sio.call("peer_message", request, timeout=TIMEOUT) == {"ok": True}
    assert worker.connected


async def test_a_worker_that_answers_a_flooder_keeps_its_own_budget(
    node: Start, make_client: ClientFactory
) -> None:
    """Replies are paid by the peer that asked: answering every request of a flooder never empties the
    worker's bucket, so its other clients are not held up; the flooder is still held to its own rate."""
    srv, token = await node(rate_limit_events_per_second=20, rate_limit_burst=20)
    _bystander, bystander_inbox = await make_client(srv.url, token, "bystander")
    async with raw_client(srv.url, auth_for(token, "w1", "worker")) as worker:
        worker_acks: list[Any] = []
        replying: list[asyncio.Task[None]] = []

        async def reply(data: dict[str, Any]) -> None:
            answer = {"to_peer_id": data["from_peer_id"], "payload": {"type": "busy"}}
            worker_acks.append(await worker.call("peer_message", answer, timeout=TIMEOUT))

        worker.on("peer_message", lambda data: replying.append(asyncio.ensure_future(reply(data))))
        async with raw_client(srv.url, auth_for(token, "flooder")) as sio:
            replies: list[Any] = []
            sio.on("peer_message", replies.append)
            request = {"to_peer_id": "w1", "payload": {"type": "job_request"}}
            acks = await asyncio.gather(
                *(sio.call("peer_message", request, timeout=TIMEOUT) for _ in range(200))
            )
            admitted = sum(1 for a in acks if a["ok"])
            assert admitted < 200 and {a["code"] for a in acks if not a["ok"]} == {"RATE_LIMITED"}
            await wait_until(lambda: len(worker_acks) == admitted)
            await asyncio.gather(*replying)
            assert all(a == {"ok": True} for a in worker_acks)  # the worker never paid for a reply
            await wait_until(lambda: len(replies) == admitted)  # one reply per admitted request
            # the worker's own budget is intact: a burst of its own to the bystander all goes through
            own = {"to_peer_id": "bystander", "payload": {"type": "job_status"}}
            assert [await worker.call("peer_message", own, timeout=TIMEOUT) for _ in range(15)] == [
                {"ok": True}
            ] * 15
            assert len([await bystander_inbox.next() for _ in range(15)]) == 15


async def test_a_connection_that_never_authenticates_is_closed(node: Start) -> None:
    srv, _token = await node(auth_timeout_seconds=1.0)
    eio = engineio.AsyncClient()
    gone = asyncio.Event()
    eio.on("disconnect", lambda *_: gone.set())
    await eio.connect(srv.url, transports=["websocket"], engineio_path="socket.io")
    try:
        async with asyncio.timeout(TIMEOUT):  # default heartbeats would keep it for 45 s
            await gone.wait()
    finally:
        await eio.disconnect()


async def _handshake_status(url: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/socket.io/?EIO=4&transport=polling") as resp,
    ):
        return resp.status, await resp.text()


async def test_connection_caps_per_address_and_in_total(node: Start, make_client: ClientFactory) -> None:
    srv, token = await node(max_connections_per_address=3)
    for i in range(3):
        await make_client(srv.url, token, f"c{i}")
    status, body = await _handshake_status(srv.url)
    assert status == 401 and "max_connections_per_address=3" in body
    extra = SignalingClient(srv.url, token, "c3")
    with pytest.raises((SignalingError, TimeoutError)):  # the websocket handshake is answered 401
        await extra.connect(timeout=2)
    await extra.close()

    total, token2 = await node(max_connections=2)
    await make_client(total.url, token2, "a")
    await make_client(total.url, token2, "b")
    status, body = await _handshake_status(total.url)
    assert status == 401 and "max_connections=2" in body


async def test_a_reader_that_does_not_drain_is_dropped(node: Start, make_client: ClientFactory) -> None:
    srv, token = await node(max_send_buffer_bytes=1 << 20, rate_limit_burst=1000)
    fat = {"properties": {"status": "available", "blob": "x" * 7000}}
    for i in range(30):
        await make_client(srv.url, token, f"w{i:02d}", "worker", fat)
    observer, _ = await make_client(srv.url, token, "observer")
    slow = await RawSocketIO.open(srv.url, rcvbuf=4096)
    try:
        await slow.join(auth_for(token, "slowpoke"))
        await wait_until(lambda: True)
        assert "slowpoke" in [p["peer_id"] for p in await observer.discover({"role": "client"})]
        for i in range(150):  # ~210 kB of answers each, never read
            await slow.send(f'42{i}["discover_peers",{{}}]')
        async with asyncio.timeout(TIMEOUT):  # dropped well before the 45 s heartbeat timeout
            while "slowpoke" in [p["peer_id"] for p in await observer.discover({"role": "client"})]:
                await asyncio.sleep(0.1)
    finally:
        slow.close()


async def test_bad_frames_get_answers_and_a_bounded_log(node: Start, tmp_path: Path) -> None:
    log_file = tmp_path / "server.log"
    srv, token = await node(log_file=log_file, log_level="INFO", rate_limit_burst=5000)
    raw = await RawSocketIO.open(srv.url)
    try:
        await raw.join(auth_for(token, "mallory"))
        deep = "[" * 100_000 + "]" * 100_000  # past orjson's limit and past Python's recursion limit
        [ack] = await raw.call(1, "peer_message", deep)
        assert ack["ok"] is False and ack["code"] == "INVALID_FRAME"
        for _ in range(3000):
            await raw.send(b"\x00" * 17)  # binary frames nobody asked for
        [ack] = await raw.call(2, "discover_peers", "{}")
        assert ack["ok"] is True  # the connection is still served
    finally:
        raw.close()
    srv_log = ""
    async with asyncio.timeout(TIMEOUT):
        while "refusals_summary" not in srv_log:
            await asyncio.sleep(0.1)
            srv_log = log_file.read_text()
    assert "Traceback" not in srv_log and "RecursionError" in srv_log
    assert srv_log.count("event=invalid_frame") <= 2, srv_log[-2000:]
    assert len(srv_log) < 20_000, len(srv_log)  # 3,000 tracebacks were 5.6 MB


async def test_a_token_with_a_lone_surrogate_is_refused_clearly(node: Start) -> None:
    srv, _token = await node()
    errors: list[Any] = []
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        async with asyncio.timeout(TIMEOUT):  # it used to hang here
            await sio.connect(
                srv.url, auth=auth_for("\ud800", "p1"), transports=["websocket"], wait_timeout=5
            )
    await sio.disconnect()
    assert errors and errors[0]["data"]["code"] == "INVALID_AUTH"
    assert "surrogate" in errors[0]["message"]


async def test_metadata_cap_names_the_limit(node: Start, make_client: ClientFactory) -> None:
    srv, token = await node(max_metadata_bytes=4096)
    fat = {"properties": {"blob": "x" * 5000}}
    with pytest.raises(SignalingError) as info:
        await SignalingClient(srv.url, token, "w-fat", "worker", fat).connect(timeout=TIMEOUT)
    assert info.value.code == "INVALID_AUTH" and "max_metadata_bytes" in info.value.message
    worker, _ = await make_client(srv.url, token, "w1", "worker", {"properties": {"status": "available"}})
    with pytest.raises(SignalingError) as info:
        await worker.update_metadata({"properties": {"blob": "x" * 5000}})
    assert info.value.code == "PAYLOAD_TOO_LARGE" and "max_metadata_bytes" in info.value.message
    client, _ = await make_client(srv.url, token, "c1")
    [peer] = await client.discover({"role": "worker"})
    assert peer["metadata"] == {"properties": {"status": "available"}}  # nothing changed


async def test_discovery_pages_limits_and_fields(node: Start, make_client: ClientFactory) -> None:
    srv, token = await node(discover_default_limit=5, discover_max_limit=8)
    names = [f"w{i:02d}" for i in range(12)]
    for name in names:
        md = {"tags": ["gpu"], "properties": {"status": "available", "host": name, "gpu_memory_mb": 8192}}
        await make_client(srv.url, token, name, "worker", md)
    client, _ = await make_client(srv.url, token, "c1")
    assert [p["peer_id"] for p in await client.discover({"role": "worker"})] == names  # pages followed
    async with raw_client(srv.url, auth_for(token, "c2")) as sio:
        seen: list[str] = []
        request: dict[str, Any] = {"filters": {"role": "worker"}, "fields": ["properties.status"]}
        pages = 0
        while True:
            ack = await sio.call("discover_peers", request, timeout=TIMEOUT)
            assert ack["ok"] and len(ack["peers"]) <= 5
            assert all(p["metadata"] == {"properties": {"status": "available"}} for p in ack["peers"])
            seen += [p["peer_id"] for p in ack["peers"]]
            pages += 1
            if ack["next_cursor"] is None:
                break
            request["cursor"] = ack["next_cursor"]
        assert seen == names and pages == 3
        ack = await sio.call("discover_peers", {"limit": 9}, timeout=TIMEOUT)
        assert ack["code"] == "INVALID_FILTER" and "discover_max_limit" in ack["message"]
        ack = await sio.call("discover_peers", {"limit": 8, "fields": []}, timeout=TIMEOUT)
        assert len(ack["peers"]) == 8 and all(p["metadata"] == {} for p in ack["peers"])


async def test_healthz_says_only_whether_the_node_is_healthy(node: Start) -> None:
    srv, _token = await node()
    async with aiohttp.ClientSession() as session, session.get(f"{srv.url}/healthz") as resp:
        assert resp.status == 200
        assert json.loads(await resp.text()) == {"ok": True}


async def test_the_client_link_resends_what_the_bucket_refused_in_order(
    node: Start, make_client: ClientFactory
) -> None:
    srv, token = await node(rate_limit_events_per_second=20, rate_limit_burst=5)
    worker, inbox = await make_client(srv.url, token, "w1", "worker")
    client, _ = await make_client(srv.url, token, "c1")
    results = [await client.send("w1", {"seq": i}) for i in range(30)]
    assert any(r.status is SendStatus.QUEUED for r in results)  # some met an empty bucket
    got = [await inbox.next() for _ in range(30)]
    assert got == [("c1", {"seq": i}) for i in range(30)]  # none lost, order kept
    await wait_until(lambda: client.queued == 0)
    assert worker.connected
