"""Peer setup: configuration, loopback candidates, offer/answer and timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCDataChannel, RTCPeerConnection

from fsm_worker.shells.rtc import (
    FsmPeerConnection,
    IceServerConfig,
    IncomingChannel,
    RtcOptions,
    RtcSetupError,
    RtcSetupTimeout,
    accept_answer,
    create_answer,
    create_offer,
    create_peer_connection,
    disable_loopback_candidates,
    enable_loopback_candidates,
    install_rtc_patches,
    loopback_candidates_enabled,
    make_configuration,
    wait_channel_open,
)

T = 20.0


def test_default_configuration_has_no_ice_servers() -> None:
    assert make_configuration().iceServers == []


def test_configuration_with_servers() -> None:
    config = make_configuration(
        [IceServerConfig("stun:stun.example:3478"), IceServerConfig(["turn:t.example"], "u", "p")]
    )
    servers = config.iceServers or []
    assert [s.urls for s in servers] == [["stun:stun.example:3478"], ["turn:t.example"]]
    assert (servers[1].username, servers[1].credential) == ("u", "p")


def test_ice_server_url_is_validated() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        IceServerConfig("http://nope")
    with pytest.raises(ValueError, match="empty"):
        IceServerConfig([])


def test_loopback_candidates_idempotent() -> None:
    disable_loopback_candidates()
    original = aioice.ice.get_host_addresses
    try:
        enable_loopback_candidates()
        wrapper = aioice.ice.get_host_addresses
        enable_loopback_candidates()
        assert aioice.ice.get_host_addresses is wrapper
        assert loopback_candidates_enabled()
        addresses = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
        assert addresses.count("127.0.0.1") == 1
        enable_loopback_candidates(exclusive=True)
        assert aioice.ice.get_host_addresses is wrapper
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1"]
    finally:
        disable_loopback_candidates()
    assert aioice.ice.get_host_addresses is original
    assert not loopback_candidates_enabled()


async def test_offline_setup_and_message_roundtrip(link_factory: Callable[[], Awaitable[Any]]) -> None:
    link = await link_factory()
    got: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    link.worker.on("message", lambda m: got.set_result(m) if not got.done() else None)
    link.client.send("ping")
    async with asyncio.timeout(T):
        assert await got == "ping"
    assert link.client.label == link.worker.label
    assert link.worker.ordered


async def test_offer_sdp_is_complete_and_loopback_only() -> None:
    enable_loopback_candidates(exclusive=True)
    pc = RTCPeerConnection(make_configuration())
    try:
        _, offer = await create_offer(pc, timeout=T)
    finally:
        await pc.close()
    candidates = [line for line in offer.splitlines() if line.startswith("a=candidate:")]
    assert candidates
    assert all(" 127.0.0.1 " in line for line in candidates)
    assert "a=end-of-candidates" in offer


async def test_offerer_times_out_without_answer() -> None:
    enable_loopback_candidates(exclusive=True)
    pc = RTCPeerConnection(make_configuration())
    try:
        channel, _ = await create_offer(pc, timeout=T)
        with pytest.raises(RtcSetupTimeout, match="open data channel"):
            await wait_channel_open(pc, channel, timeout=0.3)
    finally:
        await pc.close()


async def test_answerer_fails_when_offerer_never_applies_answer() -> None:
    enable_loopback_candidates(exclusive=True)
    client = RTCPeerConnection(make_configuration())
    worker = RTCPeerConnection(make_configuration())
    try:
        incoming = IncomingChannel(worker)
        _, offer = await create_offer(client, timeout=T)
        await create_answer(worker, offer, timeout=T)
        with pytest.raises(RtcSetupError):
            await incoming.wait_open(timeout=0.5)
    finally:
        await client.close()
        await worker.close()


async def test_garbage_offer_is_a_setup_error() -> None:
    pc = RTCPeerConnection(make_configuration())
    try:
        with pytest.raises(RtcSetupError, match="create answer"):
            await create_answer(pc, "v=0\r\nthis is not sdp\r\n", timeout=T)
    finally:
        await pc.close()


async def test_closed_connection_fails_fast() -> None:
    enable_loopback_candidates(exclusive=True)
    pc = RTCPeerConnection(make_configuration())
    channel, _ = await create_offer(pc, timeout=T)
    waiter = asyncio.create_task(wait_channel_open(pc, channel, timeout=T))
    await asyncio.sleep(0)
    await pc.close()
    with pytest.raises(RtcSetupError):
        async with asyncio.timeout(T):
            await waiter


async def test_answer_applied_twice_is_an_error() -> None:
    enable_loopback_candidates(exclusive=True)
    client = RTCPeerConnection(make_configuration())
    worker = RTCPeerConnection(make_configuration())
    try:
        _, offer = await create_offer(client, timeout=T)
        answer = await create_answer(worker, offer, timeout=T)
        await accept_answer(client, answer, timeout=T)
        with pytest.raises(RtcSetupError, match="apply answer"):
            await accept_answer(client, answer, timeout=T)
    finally:
        await client.close()
        await worker.close()


async def test_on_channel_sees_the_first_message() -> None:
    enable_loopback_candidates(exclusive=True)
    client = RTCPeerConnection(make_configuration())
    worker = RTCPeerConnection(make_configuration())
    first: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    try:

        def on_message(message: str | bytes) -> None:
            if not first.done():
                first.set_result(str(message))

        def attach(channel: RTCDataChannel) -> None:
            channel.on("message", on_message)

        incoming = IncomingChannel(worker, on_channel=attach)
        channel, offer = await create_offer(client, timeout=T)
        await accept_answer(client, await create_answer(worker, offer, timeout=T), timeout=T)
        await wait_channel_open(client, channel, timeout=T)
        channel.send("sent the moment the channel opened")
        await incoming.wait_open(timeout=T)
        async with asyncio.timeout(T):
            assert await first == "sent the moment the channel opened"
    finally:
        await client.close()
        await worker.close()


async def test_unexpected_label_is_refused() -> None:
    enable_loopback_candidates(exclusive=True)
    client = RTCPeerConnection(make_configuration())
    worker = RTCPeerConnection(make_configuration())
    try:
        incoming = IncomingChannel(worker)
        channel, offer = await create_offer(client, label="something-else", timeout=T)
        await accept_answer(client, await create_answer(worker, offer, timeout=T), timeout=T)
        await wait_channel_open(client, channel, timeout=T)
        with pytest.raises(RtcSetupError, match="label"):
            await incoming.wait_open(timeout=T)
    finally:
        await client.close()
        await worker.close()


def _host_candidates(sdp: str) -> set[str]:
    return {
        line.split()[4]
        for line in sdp.splitlines()
        if line.startswith("a=candidate:") and " typ host" in line
    }


async def test_loopback_mode_is_per_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two connections in one process, two modes: neither changes the other (no process-wide switch)."""
    disable_loopback_candidates()
    monkeypatch.setattr(
        aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.2"]
    )  # bindable, stands in for a LAN address
    install_rtc_patches()
    only = create_peer_connection(RtcOptions(loopback="only"))
    added = create_peer_connection(RtcOptions(loopback="add"))
    off = create_peer_connection(RtcOptions(loopback="off"))
    plain = RTCPeerConnection(make_configuration())  # not ours: the process default (aioice's own)
    try:
        sdps = []
        for pc in (only, added, off, plain):
            _, sdp = await create_offer(pc, timeout=T)
            sdps.append(_host_candidates(sdp))
        assert sdps == [{"127.0.0.1"}, {"127.0.0.2", "127.0.0.1"}, {"127.0.0.2"}, {"127.0.0.2"}]
    finally:
        for pc in (only, added, off, plain):
            await pc.close()
        disable_loopback_candidates()


def test_factory_refuses_loopback_without_the_hook() -> None:
    disable_loopback_candidates()
    with pytest.raises(RuntimeError, match="install_rtc_patches"):
        create_peer_connection(RtcOptions(loopback="only"))
    assert isinstance(create_peer_connection(RtcOptions(loopback="off")), FsmPeerConnection)
    install_rtc_patches()
    install_rtc_patches()  # idempotent
    assert loopback_candidates_enabled()
    disable_loopback_candidates()
