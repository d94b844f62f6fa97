"""Hostile event data of every kind: always an ``ok: false`` ack with a code, and the server stays healthy."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import aiohttp
import pytest
import socketio
from support.signaling import DEFAULT_TIMEOUT as TIMEOUT
from support.signaling import ClientFactory, auth_for, loopback_config, raw_client, running_server

MAX = 4096


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"n": value}
    return value


BAD_EVENTS: list[tuple[str, Any, str]] = [
    # peer_message
    ("peer_message", None, "INVALID_MESSAGE"),
    ("peer_message", "text", "INVALID_MESSAGE"),
    ("peer_message", 42, "INVALID_MESSAGE"),
    ("peer_message", [1, 2], "INVALID_MESSAGE"),
    ("peer_message", ({"to_peer_id": "w1", "payload": {}}, "extra"), "INVALID_MESSAGE"),
    ("peer_message", {}, "INVALID_MESSAGE"),
    ("peer_message", {"payload": {}}, "INVALID_MESSAGE"),
    ("peer_message", {"to_peer_id": 7, "payload": {}}, "INVALID_MESSAGE"),
    ("peer_message", {"to_peer_id": "", "payload": {}}, "INVALID_MESSAGE"),
    ("peer_message", {"to_peer_id": "x" * 500, "payload": {}}, "INVALID_MESSAGE"),
    ("peer_message", {"to_peer_id": "w1"}, "INVALID_MESSAGE"),
    ("peer_message", {"to_peer_id": "w1", "payload": "text"}, "INVALID_MESSAGE"),
    ("peer_message", {"to_peer_id": "w1", "payload": [1]}, "INVALID_MESSAGE"),
    ("peer_message", {"to_peer_id": "w1", "payload": nested(60)}, "INVALID_MESSAGE"),
    ("peer_message", {"to_peer_id": "w1", "payload": {"blob": b"\x00\x01"}}, "INVALID_MESSAGE"),
    ("peer_message", {"to_peer_id": "w1", "payload": {"big": "x" * (MAX + 10)}}, "PAYLOAD_TOO_LARGE"),
    # discover_peers
    ("discover_peers", None, "INVALID_MESSAGE"),
    ("discover_peers", "all", "INVALID_MESSAGE"),
    ("discover_peers", {"filters": "all"}, "INVALID_FILTER"),
    ("discover_peers", {"filters": {"colour": "red"}}, "INVALID_FILTER"),
    ("discover_peers", {"filters": {"role": "admin"}}, "INVALID_FILTER"),
    ("discover_peers", {"filters": {"tags": "gpu"}}, "INVALID_FILTER"),
    ("discover_peers", {"filters": {"tags": [1]}}, "INVALID_FILTER"),
    ("discover_peers", {"filters": {"properties": []}}, "INVALID_FILTER"),
    ("discover_peers", {"filters": {"properties": {"m": {"$gte": "8"}}}}, "INVALID_FILTER"),
    ("discover_peers", {"filters": {"properties": {"m": {"$where": 1}}}}, "INVALID_FILTER"),
    ("discover_peers", {"filters": {"properties": nested(60)}}, "INVALID_FILTER"),
    # update_metadata
    ("update_metadata", None, "INVALID_MESSAGE"),
    ("update_metadata", {}, "INVALID_MESSAGE"),
    ("update_metadata", {"metadata": "x"}, "INVALID_METADATA"),
    ("update_metadata", {"metadata": {"tags": [1]}}, "INVALID_METADATA"),
    ("update_metadata", {"metadata": {"properties": 3}}, "INVALID_METADATA"),
    ("update_metadata", {"metadata": nested(60)}, "INVALID_METADATA"),
    ("update_metadata", {"metadata": {"properties": {"big": "x" * (MAX + 10)}}}, "PAYLOAD_TOO_LARGE"),
    # names that are not events of ours
    ("no_such_event", {"x": 1}, "UNKNOWN_EVENT"),
    ("disconnect", None, "INVALID_MESSAGE"),
    ("connect", {"token": "t"}, "INVALID_MESSAGE"),
]


async def test_every_malformed_event_gets_an_error_ack(make_client: ClientFactory) -> None:
    token = secrets.token_hex(8)
    config = loopback_config([token], max_event_bytes=MAX, max_metadata_bytes=MAX)
    async with running_server(config) as srv:
        worker, inbox = await make_client(
            srv.url, token, "w1", "worker", {"properties": {"status": "available"}}
        )
        async with raw_client(srv.url, auth_for(token, "mallory")) as sio:
            for event, data, code in BAD_EVENTS:
                ack = (
                    await sio.call(event, data, timeout=TIMEOUT)
                    if data is not None
                    else await sio.call(event, timeout=TIMEOUT)
                )
                assert isinstance(ack, dict), (event, data)
                assert ack["ok"] is False, (event, data, ack)
                assert ack["code"] == code, (event, data, ack)
                assert isinstance(ack["message"], str) and ack["message"]
            # fire-and-forget garbage (no ack requested) is dropped quietly
            await sio.emit("peer_message", "garbage")
            # the same connection still works, and nothing changed
            assert await sio.call(
                "peer_message", {"to_peer_id": "w1", "payload": {"ok": 1}}, timeout=TIMEOUT
            ) == {"ok": True}
            assert await inbox.next() == ("mallory", {"ok": 1})
            found = await sio.call("discover_peers", {"filters": {}}, timeout=TIMEOUT)
            assert found["peers"] == [
                {"peer_id": "w1", "role": "worker", "metadata": {"properties": {"status": "available"}}}
            ]
        assert worker.connected


async def test_oversized_frames_and_absurd_nesting_do_not_hurt_the_server(make_client: ClientFactory) -> None:
    token = secrets.token_hex(8)
    async with running_server(loopback_config([token], max_event_bytes=MAX)) as srv:
        worker, inbox = await make_client(srv.url, token, "w1", "worker")
        # beyond the transport limit the connection is cut; deeper than the JSON decoder allows is dropped
        attacks = [{"to_peer_id": "w1", "payload": {"x": "y" * 200_000}}, "[" * 100_000 + "]" * 100_000]
        for i, data in enumerate(attacks):
            async with raw_client(srv.url, auth_for(token, f"mallory{i}")) as sio:
                if isinstance(data, str):
                    await sio.eio.send("42" + '["peer_message",' + data + "]")
                else:
                    with pytest.raises((socketio.exceptions.TimeoutError, socketio.exceptions.SocketIOError)):
                        await sio.call("peer_message", data, timeout=1)
        client, _ = await make_client(srv.url, token, "c1")
        assert (await client.send("w1", {"after": "abuse"})).delivered
        assert await inbox.next() == ("c1", {"after": "abuse"})
        async with (
            asyncio.timeout(TIMEOUT),
            aiohttp.ClientSession() as session,
            session.get(f"{srv.url}/healthz") as resp,
        ):
            assert (await resp.json())["ok"] is True
        assert worker.connected
