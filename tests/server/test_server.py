"""The server with real clients on loopback: routing, identity, rooms, discovery, metadata."""

from __future__ import annotations

import asyncio
import secrets

import aiohttp
import pytest
import socketio
from support.signaling import DEFAULT_TIMEOUT as TIMEOUT
from support.signaling import (
    ClientFactory,
    ServerInfo,
    auth_for,
    loopback_config,
    raw_client,
    running_server,
)

from fsm_worker.shells.signaling import SendStatus, SignalingClient, SignalingError

WORKER_MD = {
    "tags": ["gpu", "cuda12"],
    "properties": {"status": "available", "gpu_memory_mb": 16384, "gpu_model": "A100"},
}


async def test_healthz(signaling_server: ServerInfo) -> None:
    async with (
        asyncio.timeout(TIMEOUT),
        aiohttp.ClientSession() as session,
        session.get(f"{signaling_server.url}/healthz") as resp,
    ):
        assert resp.status == 200
        assert (await resp.json())["ok"] is True


async def test_routing_and_peer_not_found(signaling_server: ServerInfo, make_client: ClientFactory) -> None:
    s = signaling_server
    worker, worker_inbox = await make_client(s.url, s.token, "w1", "worker", WORKER_MD)
    client, client_inbox = await make_client(s.url, s.token, "c1")
    result = await client.send("w1", {"type": "job_request", "n": 1})
    assert result.status is SendStatus.DELIVERED
    assert await worker_inbox.next() == ("c1", {"type": "job_request", "n": 1})
    assert (await worker.send("c1", {"type": "job_response"})).delivered
    assert await client_inbox.next() == ("w1", {"type": "job_response"})
    missing = await client.send("nobody", {"x": 1})
    assert (missing.status, missing.code) == (SendStatus.REFUSED, "PEER_NOT_FOUND")


async def test_messages_of_one_sender_arrive_in_order(
    signaling_server: ServerInfo, make_client: ClientFactory
) -> None:
    s = signaling_server
    _, inbox = await make_client(s.url, s.token, "w1", "worker")
    client, _ = await make_client(s.url, s.token, "c1")
    results = await asyncio.gather(*(client.send("w1", {"i": i}) for i in range(200)))
    assert all(r.delivered for r in results)
    assert [(await inbox.next())[1]["i"] for _ in range(200)] == list(range(200))


async def test_sender_identity_is_bound_to_the_connection(
    signaling_server: ServerInfo, make_client: ClientFactory
) -> None:
    s = signaling_server
    _, inbox = await make_client(s.url, s.token, "w1", "worker")
    async with raw_client(s.url, auth_for(s.token, "mallory")) as sio:
        forged = {"to_peer_id": "w1", "from_peer_id": "trusted-client", "payload": {"from_peer_id": "x"}}
        assert await sio.call("peer_message", forged, timeout=TIMEOUT) == {"ok": True}
    assert await inbox.next() == ("mallory", {"from_peer_id": "x"})


async def test_rooms_are_isolated(make_client: ClientFactory) -> None:
    token_a, token_b = secrets.token_hex(8), secrets.token_hex(8)
    async with running_server(loopback_config([token_a, token_b])) as srv:
        await make_client(srv.url, token_a, "w1", "worker", WORKER_MD)
        other, _ = await make_client(srv.url, token_b, "c1")
        assert await other.discover({}) == []
        result = await other.send("w1", {"x": 1})
        assert result.code == "PEER_NOT_FOUND"
        # the same peer id may exist independently in another room
        await make_client(srv.url, token_b, "w1", "worker")


@pytest.mark.parametrize(
    ("auth", "code"),
    [
        (None, "INVALID_AUTH"),
        ("token", "INVALID_AUTH"),
        ({"peer_id": "p", "role": "client"}, "INVALID_AUTH"),
        ({"token": "t", "peer_id": "", "role": "client"}, "INVALID_AUTH"),
        ({"token": "t", "peer_id": "has space", "role": "client"}, "INVALID_AUTH"),
        ({"token": "t", "peer_id": "p", "role": "admin"}, "INVALID_AUTH"),
        ({"token": "t", "peer_id": "p", "role": "client", "metadata": []}, "INVALID_AUTH"),
        ({"token": "t", "peer_id": "p", "role": "client", "metadata": {"tags": "gpu"}}, "INVALID_AUTH"),
        ({"token": "t", "peer_id": "p", "role": "client", "resume_secret": "short"}, "INVALID_AUTH"),
        ({"token": "t", "peer_id": "p", "role": "client", "bogus": 1}, "INVALID_AUTH"),
    ],
)
async def test_malformed_auth_is_refused(signaling_server: ServerInfo, auth: object, code: str) -> None:
    errors: list[object] = []
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        async with asyncio.timeout(TIMEOUT):
            await sio.connect(signaling_server.url, auth=auth, transports=["websocket"], wait_timeout=5)
    assert errors and isinstance(errors[0], dict)
    assert errors[0]["data"]["code"] == code
    await sio.disconnect()


async def test_wrong_token_is_refused(signaling_server: ServerInfo) -> None:
    client = SignalingClient(signaling_server.url, "wrong-token", "c1")
    with pytest.raises(SignalingError) as info:
        await client.connect(timeout=TIMEOUT)
    assert info.value.code == "AUTH_FAILED"
    assert not client.connected


async def test_live_peer_id_cannot_be_stolen(
    signaling_server: ServerInfo, make_client: ClientFactory
) -> None:
    s = signaling_server
    worker, inbox = await make_client(s.url, s.token, "w1", "worker")
    thief = SignalingClient(s.url, s.token, "w1", "worker")
    with pytest.raises(SignalingError) as info:
        await thief.connect(timeout=TIMEOUT)
    assert info.value.code == "PEER_ID_TAKEN"
    wrong_secret = SignalingClient(s.url, s.token, "w1", "worker", resume_secret="x" * 43)
    with pytest.raises(SignalingError):
        await wrong_secret.connect(timeout=TIMEOUT)
    client, _ = await make_client(s.url, s.token, "c1")
    assert (await client.send("w1", {"still": "mine"})).delivered
    assert await inbox.next() == ("c1", {"still": "mine"})
    assert worker.connected


async def test_resume_secret_takes_over_a_live_socket(
    signaling_server: ServerInfo, make_client: ClientFactory
) -> None:
    s = signaling_server
    old, _ = await make_client(s.url, s.token, "w1", "worker")
    assert old.resume_secret
    new, new_inbox = await make_client(s.url, s.token, "w1", "worker", resume_secret=old.resume_secret)
    assert new.resume_secret == old.resume_secret
    client, _ = await make_client(s.url, s.token, "c1")
    assert (await client.send("w1", {"to": "new"})).delivered
    assert await new_inbox.next() == ("c1", {"to": "new"})
    async with asyncio.timeout(TIMEOUT):  # the replaced socket is dropped and does not come back
        while old.connected:
            await asyncio.sleep(0.02)
    peers = await client.discover({})
    assert [p["peer_id"] for p in peers] == ["w1"]


async def test_grace_period_reserves_id_for_secret_holder(make_client: ClientFactory) -> None:
    token = secrets.token_hex(8)
    async with running_server(loopback_config([token], resume_grace_seconds=30)) as srv:
        first, _ = await make_client(srv.url, token, "w1", "worker")
        secret = first.resume_secret
        await first.close()
        squatter = SignalingClient(srv.url, token, "w1", "worker")
        with pytest.raises(SignalingError) as info:
            await squatter.connect(timeout=TIMEOUT)
        assert info.value.code == "PEER_ID_RESERVED"
        back, _ = await make_client(srv.url, token, "w1", "worker", resume_secret=secret)
        assert back.connected


async def test_after_grace_first_come_first_served(make_client: ClientFactory) -> None:
    token = secrets.token_hex(8)
    async with running_server(loopback_config([token], resume_grace_seconds=0)) as srv:
        first, _ = await make_client(srv.url, token, "w1", "worker")
        await first.close()
        other, _ = await make_client(srv.url, token, "w1", "worker")
        assert other.resume_secret != first.resume_secret


async def test_discovery_filters(signaling_server: ServerInfo, make_client: ClientFactory) -> None:
    s = signaling_server
    await make_client(s.url, s.token, "big", "worker", WORKER_MD)
    small_md = {"tags": ["cpu"], "properties": {"status": "available", "gpu_memory_mb": 4096}}
    await make_client(s.url, s.token, "small", "worker", small_md)
    busy_md = {"tags": ["gpu"], "properties": {"status": "busy", "gpu_memory_mb": 32768}}
    await make_client(s.url, s.token, "busy", "worker", busy_md)
    client, _ = await make_client(s.url, s.token, "c1")

    async def ids(filters: dict[str, object]) -> list[str]:
        return sorted(p["peer_id"] for p in await client.discover(filters))

    assert await ids({}) == ["big", "busy", "small"]  # never includes self
    assert await ids({"role": "client"}) == []
    assert await ids({"role": "worker", "properties": {"status": "available"}}) == ["big", "small"]
    assert await ids({"properties": {"gpu_memory_mb": {"$gte": 8192}}}) == ["big", "busy"]
    assert await ids({"properties": {"gpu_memory_mb": {"$gte": 8192, "$lte": 20000}}}) == ["big"]
    assert await ids({"properties": {"gpu_memory_mb": {"$eq": 4096}}}) == ["small"]
    assert await ids({"tags": ["cpu", "nothing"]}) == ["small"]
    assert await ids({"tags": ["gpu"], "properties": {"status": "available"}}) == ["big"]
    assert await ids({"properties": {"gpu_model": "A100"}}) == ["big"]
    assert await ids({"properties": {"missing": 1}}) == []
    found = await client.discover({"tags": ["cpu"]})
    assert found == [{"peer_id": "small", "role": "worker", "metadata": small_md}]
    with pytest.raises(SignalingError) as info:
        await client.discover({"properties": {"gpu_memory_mb": {"$gt": 1}}})
    assert info.value.code == "INVALID_FILTER"


async def test_metadata_merge_delete_and_replace(
    signaling_server: ServerInfo, make_client: ClientFactory
) -> None:
    s = signaling_server
    worker, _ = await make_client(s.url, s.token, "w1", "worker", WORKER_MD)
    client, _ = await make_client(s.url, s.token, "c1")
    assert await worker.update_metadata(
        {"tags": ["tpu"], "properties": {"status": "busy", "gpu_model": None, "job_id": "j1"}}
    )
    [peer] = await client.discover({"role": "worker"})
    assert peer["metadata"] == {
        "tags": ["tpu"],
        "properties": {"status": "busy", "gpu_memory_mb": 16384, "job_id": "j1"},
    }
    assert await client.discover({"properties": {"status": "available"}}) == []
    await worker.update_metadata({"properties": {"status": "available", "job_id": None}})
    [peer] = await client.discover({"properties": {"status": "available"}})
    assert peer["metadata"]["properties"] == {"status": "available", "gpu_memory_mb": 16384}
    with pytest.raises(SignalingError) as info:
        await worker.update_metadata({"tags": "not-a-list"})
    assert info.value.code == "INVALID_METADATA"
    assert worker.metadata["tags"] == ["tpu"]
