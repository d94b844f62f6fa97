"""Fast-path tuning: real aiortc peers on loopback, integrity by sha256 (no timing assertions)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aioice.ice
import attrs
import pytest
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection
from aiortc import rtcsctptransport as sctp_module

from fsm_worker.shells.rtc import tuning

STEP = 30.0
SIZE = 3 * 1024 * 1024 + 12345  # a few MB, not a multiple of any chunk size
STOCK_USER_DATA = sctp_module.USERDATA_MAX_LENGTH


@attrs.define
class Pair:
    offerer: RTCPeerConnection
    answerer: RTCPeerConnection
    out: RTCDataChannel  # offerer's end
    back: RTCDataChannel  # answerer's end


Opener = Callable[[bool, bool], Awaitable[Pair]]


def _loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", _loopback_only)
    tuning.disable_fast_path()
    yield
    tuning.disable_fast_path()


async def _open(tune_offerer: bool, tune_answerer: bool) -> Pair:
    """Offer/answer in-process; a tuned side advertises and applies what it negotiated."""
    config = RTCConfiguration(iceServers=[])
    offerer, answerer = RTCPeerConnection(config), RTCPeerConnection(config)
    out = offerer.createDataChannel("t")
    incoming: asyncio.Future[RTCDataChannel] = asyncio.get_running_loop().create_future()
    answerer.on("datachannel", incoming.set_result)
    opened = asyncio.Event()
    out.on("open", opened.set)
    offer_cap = tuning.local_capability() if tune_offerer else None
    answer_cap = tuning.local_capability() if tune_answerer else None
    async with asyncio.timeout(STEP):
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        if tune_offerer:  # read side ready early; upgraded once the answer's capability is known
            tuning.apply_fast_path(offerer, None)
        if tune_answerer:
            tuning.apply_fast_path(answerer, tuning.negotiate(offer_cap))
        if tune_offerer:
            tuning.apply_fast_path(offerer, tuning.negotiate(answer_cap))
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        back = await incoming
        await opened.wait()
    return Pair(offerer, answerer, out, back)


@pytest.fixture
async def open_pair() -> AsyncIterator[Opener]:
    pairs: list[Pair] = []

    async def make(tune_offerer: bool, tune_answerer: bool) -> Pair:
        pair = await _open(tune_offerer, tune_answerer)
        pairs.append(pair)
        return pair

    yield make
    async with asyncio.timeout(STEP):
        for pair in pairs:
            await pair.offerer.close()
            await pair.answerer.close()


async def _transfer(sender: RTCDataChannel, receiver: RTCDataChannel, data: bytes, message: int) -> str:
    """Send ``data`` in ``message``-byte messages with flow control; return the receiver's sha256."""
    digest = hashlib.sha256()
    received = 0
    done = asyncio.Event()

    def on_message(chunk: bytes | str) -> None:
        nonlocal received
        assert isinstance(chunk, bytes)
        digest.update(chunk)
        received += len(chunk)
        if received >= len(data):
            done.set()

    receiver.on("message", on_message)
    low = asyncio.Event()
    sender.bufferedAmountLowThreshold = 256 * 1024
    sender.on("bufferedamountlow", low.set)
    async with asyncio.timeout(STEP):
        for offset in range(0, len(data), message):
            while sender.bufferedAmount > 1024 * 1024:
                low.clear()
                await low.wait()
            sender.send(data[offset : offset + message])
        await done.wait()
    assert received == len(data)
    return digest.hexdigest()


def _mean_packet(pc: RTCPeerConnection) -> float:
    """Mean size of the DTLS datagrams ``pc`` sent."""
    assert pc.sctp is not None
    stats = next(iter(pc.sctp.transport._get_stats().values()))
    return float(stats.bytesSent / max(1, stats.packetsSent))


async def test_tuned_to_tuned_both_directions_intact(open_pair: Opener) -> None:
    tuning.enable_fast_path("loopback")
    pair = await open_pair(True, True)
    up, down = os.urandom(SIZE), os.urandom(SIZE // 2)
    message = tuning.recommended_message_size(tuning.LOOPBACK)
    got_up, got_down = await asyncio.gather(
        _transfer(pair.out, pair.back, up, message), _transfer(pair.back, pair.out, down, 65536)
    )
    assert got_up == hashlib.sha256(up).hexdigest()
    assert got_down == hashlib.sha256(down).hexdigest()
    assert _mean_packet(pair.offerer) > 4 * 1500  # large records really went on the wire
    assert _mean_packet(pair.answerer) > 4 * 1500
    assert sctp_module.USERDATA_MAX_LENGTH == STOCK_USER_DATA  # never leaks out of a tuned step


async def test_lan_profile_intact(open_pair: Opener) -> None:
    tuning.enable_fast_path("lan")
    pair = await open_pair(True, True)
    data = os.urandom(SIZE)
    assert await _transfer(pair.out, pair.back, data, 65536) == hashlib.sha256(data).hexdigest()
    assert 1500 < _mean_packet(pair.offerer) <= tuning.LAN.max_packet + 64


@pytest.mark.parametrize(("tune_offerer", "tune_answerer"), [(True, False), (False, True)])
async def test_tuned_and_stock_interoperate(
    open_pair: Opener, tune_offerer: bool, tune_answerer: bool
) -> None:
    tuning.enable_fast_path("loopback")
    pair = await open_pair(tune_offerer, tune_answerer)
    up, down = os.urandom(SIZE), os.urandom(SIZE // 3)
    assert await _transfer(pair.out, pair.back, up, 65536) == hashlib.sha256(up).hexdigest()
    assert await _transfer(pair.back, pair.out, down, 65536) == hashlib.sha256(down).hexdigest()
    assert _mean_packet(pair.offerer) <= 1500  # nobody sent large records to a stock peer
    assert _mean_packet(pair.answerer) <= 1500


async def test_tuned_and_stock_connections_share_a_process(open_pair: Opener) -> None:
    tuning.enable_fast_path("loopback")
    tuned = await open_pair(True, True)
    tuning.disable_fast_path()
    stock = await open_pair(False, False)
    a, b = os.urandom(SIZE), os.urandom(SIZE // 2)
    got_a, got_b = await asyncio.gather(
        _transfer(tuned.out, tuned.back, a, 65536), _transfer(stock.out, stock.back, b, 65536)
    )
    assert (got_a, got_b) == (hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest())
    assert _mean_packet(tuned.offerer) > 4 * 1500
    assert _mean_packet(stock.offerer) <= 1500


async def test_apply_is_idempotent_and_needs_sctp() -> None:
    tuning.enable_fast_path("loopback")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        with pytest.raises(ValueError, match="no SCTP transport"):
            tuning.apply_fast_path(pc, tuning.LOOPBACK)
        pc.createDataChannel("x")
        assert pc.sctp is not None
        tuning.apply_fast_path(pc, tuning.LOOPBACK)
        handle_data = pc.sctp._handle_data
        tuning.apply_fast_path(pc, tuning.LOOPBACK)
        tuning.apply_fast_path(pc, None)
        tuning.apply_fast_path(pc, tuning.LAN)
        assert pc.sctp._handle_data is handle_data  # not wrapped twice, never downgraded
    finally:
        await pc.close()


async def test_local_only_then_upgrade() -> None:
    tuning.enable_fast_path("loopback")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.createDataChannel("x")
        assert pc.sctp is not None
        tuning.apply_fast_path(pc, None)
        assert "_handle_data" not in vars(pc.sctp)  # nothing wire-visible yet
        assert type(pc.sctp.transport).__name__ != "RTCDtlsTransport"  # large reads installed
        tuning.apply_fast_path(pc, tuning.LOOPBACK)
        assert "_handle_data" in vars(pc.sctp)
    finally:
        await pc.close()


async def test_apply_without_opt_in_changes_nothing() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.createDataChannel("x")
        tuning.apply_fast_path(pc, None)
        assert pc.sctp is not None
        assert "_handle_data" not in vars(pc.sctp)
        assert type(pc.sctp.transport).__name__ == "RTCDtlsTransport"
    finally:
        await pc.close()


def test_capability_and_negotiation() -> None:
    assert tuning.local_capability() is None
    assert tuning.negotiate({"version": 1, "max_packet": 16384}) is None  # not opted in
    assert tuning.enable_fast_path("lan") is tuning.LAN
    assert tuning.enable_fast_path("lan") is tuning.LAN  # idempotent
    cap = tuning.local_capability()
    assert cap == {"version": tuning.CAPABILITY_VERSION, "max_packet": tuning.DTLS_MAX_PLAINTEXT}
    assert tuning.negotiate(cap) == tuning.LAN
    smaller = tuning.negotiate({"version": 1, "max_packet": 4000})
    assert smaller is not None and smaller.max_packet == 4000
    bad: object
    for bad in (
        None,
        "yes",
        [],
        {},
        {"version": 2, "max_packet": 9000},
        {"version": 1, "max_packet": "9000"},
        {"version": 1, "max_packet": 100},
        {"version": 1, "max_packet": True},
    ):
        assert tuning.negotiate(bad) is None


def test_profiles_and_sizes() -> None:
    with pytest.raises(ValueError, match="unknown fast-path profile"):
        tuning.enable_fast_path("warp")
    with pytest.raises(ValueError, match="max_packet"):
        tuning.FastPathProfile(name="x", max_packet=70000)
    chunk = tuning.user_data_size(tuning.LOOPBACK.max_packet)
    size = tuning.recommended_message_size(tuning.LOOPBACK)
    assert size % chunk == 0 and size <= 262144
    assert tuning.recommended_message_size(None) % STOCK_USER_DATA == 0
