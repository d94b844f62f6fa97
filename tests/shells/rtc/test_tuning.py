"""Fast path by default: real aiortc peers on loopback, integrity by sha256 (no timing assertions)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs
import pytest
from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc import rtcsctptransport as sctp_module

from fsm_worker.shells.rtc import RtcOptions, create_peer_connection, install_rtc_patches, tuning
from fsm_worker.shells.rtc.aiortc_hooks import tuned
from fsm_worker.shells.rtc.options import MAX_DATAGRAM
from fsm_worker.shells.rtc.probing import MAX_PARTIAL_PACKETS, PIECE_MAGIC, Reassembler, split_packet

STEP = 30.0
SIZE = 3 * 1024 * 1024 + 12345  # a few MB, not a multiple of any chunk size
STOCK_USER_DATA = sctp_module.USERDATA_MAX_LENGTH
LOOPBACK = RtcOptions(loopback="only")
STOCK = RtcOptions(loopback="only", packet_size="stock")


@attrs.define
class Pair:
    offerer: RTCPeerConnection
    answerer: RTCPeerConnection
    out: RTCDataChannel  # offerer's end
    back: RTCDataChannel  # answerer's end


Opener = Callable[..., Awaitable[Pair]]


async def _open(offerer_options: RtcOptions | None, answerer_options: RtcOptions | None) -> Pair:
    """Offer/answer in-process; ``None`` is a plain aiortc peer (no capability, no tuning at all)."""
    install_rtc_patches()
    offerer = create_peer_connection(offerer_options or STOCK)
    answerer = create_peer_connection(answerer_options or STOCK)
    out = offerer.createDataChannel("t")
    incoming: asyncio.Future[RTCDataChannel] = asyncio.get_running_loop().create_future()
    answerer.on("datachannel", incoming.set_result)
    opened = asyncio.Event()
    out.on("open", opened.set)
    offer_cap = tuning.local_capability(offerer_options) if offerer_options else None
    answer_cap = tuning.local_capability(answerer_options) if answerer_options else None
    async with asyncio.timeout(STEP):
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        if offerer_options:  # read side ready early; upgraded once the answer's capability is known
            tuning.apply_fast_path(offerer, None)
        if answerer_options:
            tuning.apply_fast_path(answerer, tuning.negotiate(answerer_options, offer_cap))
        if offerer_options:
            tuning.apply_fast_path(offerer, tuning.negotiate(offerer_options, answer_cap))
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        back = await incoming
        await opened.wait()
    return Pair(offerer, answerer, out, back)


@pytest.fixture
async def open_pair() -> AsyncIterator[Opener]:
    pairs: list[Pair] = []

    async def make(offerer: RtcOptions | None, answerer: RtcOptions | None) -> Pair:
        pair = await _open(offerer, answerer)
        pairs.append(pair)
        return pair

    yield make
    async with asyncio.timeout(STEP):
        for pair in pairs:
            await pair.offerer.close()
            await pair.answerer.close()


async def transfer(sender: RTCDataChannel, receiver: RTCDataChannel, data: bytes, message: int) -> str:
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


def report(pc: RTCPeerConnection) -> tuning.PathReport:
    got = tuning.path_report(pc)
    assert got is not None
    return got


def mean_packet(pc: RTCPeerConnection) -> float:
    """Mean size of the DTLS datagrams ``pc`` sent (aiortc's own counters)."""
    assert pc.sctp is not None
    stats = next(iter(pc.sctp.transport._get_stats().values()))
    return float(stats.bytesSent / max(1, stats.packetsSent))


async def test_capable_peers_probe_and_use_large_packets_both_directions(open_pair: Opener) -> None:
    pair = await open_pair(LOOPBACK, LOOPBACK)
    up, down = os.urandom(SIZE), os.urandom(SIZE // 2)
    got_up, got_down = await asyncio.gather(
        transfer(pair.out, pair.back, up, 256 * 1024), transfer(pair.back, pair.out, down, 65536)
    )
    assert got_up == hashlib.sha256(up).hexdigest()
    assert got_down == hashlib.sha256(down).hexdigest()
    for pc in (pair.offerer, pair.answerer):
        seen = report(pc)
        assert seen.agreed == 16384
        assert seen.probes_acked >= 1 and 16384 in seen.sizes  # chosen by an acknowledged probe, not assumed
        assert mean_packet(pc) > 4 * 1500  # large records really went on the wire
    assert sctp_module.USERDATA_MAX_LENGTH == STOCK_USER_DATA  # never leaks out of a tuned step


@pytest.mark.parametrize("capable", ["offerer", "answerer"])
async def test_a_stock_peer_is_never_sent_a_large_packet(open_pair: Opener, capable: str) -> None:
    pair = await open_pair(LOOPBACK, None) if capable == "offerer" else await open_pair(None, LOOPBACK)
    up, down = os.urandom(SIZE), os.urandom(SIZE // 3)
    assert await transfer(pair.out, pair.back, up, 65536) == hashlib.sha256(up).hexdigest()
    assert await transfer(pair.back, pair.out, down, 65536) == hashlib.sha256(down).hexdigest()
    ours = pair.offerer if capable == "offerer" else pair.answerer
    seen = report(ours)
    assert seen.agreed is None and seen.probes_sent == 0
    assert 0 < seen.largest_datagram <= 1500  # every datagram it sent, probes included, fits a stock peer
    assert mean_packet(pair.offerer) <= 1500 and mean_packet(pair.answerer) <= 1500
    assert (
        ours.sctp is not None and type(ours.sctp.transport).__name__ != "RTCDtlsTransport"
    )  # local: still on


async def test_stock_policy_advertises_nothing_and_sends_stock_packets(open_pair: Opener) -> None:
    assert tuning.local_capability(STOCK) is None and tuning.capability_options(STOCK) == {}
    pair = await open_pair(STOCK, LOOPBACK)
    data = os.urandom(SIZE // 2)
    assert await transfer(pair.back, pair.out, data, 65536) == hashlib.sha256(data).hexdigest()
    assert report(pair.answerer).largest_datagram <= 1500
    assert report(pair.answerer).probes_sent == 0


async def test_capable_and_stock_connections_share_a_process(open_pair: Opener) -> None:
    fast = await open_pair(LOOPBACK, LOOPBACK)
    stock = await open_pair(STOCK, STOCK)
    a, b = os.urandom(SIZE), os.urandom(SIZE // 2)
    got_a, got_b = await asyncio.gather(
        transfer(fast.out, fast.back, a, 65536), transfer(stock.out, stock.back, b, 65536)
    )
    assert (got_a, got_b) == (hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest())
    assert mean_packet(fast.offerer) > 4 * 1500
    assert report(stock.offerer).largest_datagram <= 1500


async def test_black_hole_in_the_middle_falls_back_and_loses_nothing(open_pair: Opener) -> None:
    """Large datagrams start vanishing mid-transfer (the sender's path drops them): stock size, all bytes."""
    pair = await open_pair(LOOPBACK, LOOPBACK)
    assert pair.offerer.sctp is not None
    ice = pair.offerer.sctp.transport.transport
    send = ice._send
    dropped = 0
    hostile = asyncio.Event()

    async def path(data: bytes) -> None:
        nonlocal dropped
        if hostile.is_set() and len(data) > 1472:
            dropped += 1
            return
        await send(data)

    ice._send = path
    data = os.urandom(4 * SIZE)
    got = asyncio.ensure_future(transfer(pair.out, pair.back, data, 256 * 1024))
    while report(pair.offerer).bytes_sent < SIZE:  # well into the transfer, on large packets
        await asyncio.sleep(0.01)
    assert report(pair.offerer).packet_size == 16384
    hostile.set()
    assert await got == hashlib.sha256(data).hexdigest()
    seen = report(pair.offerer)
    assert dropped > 0 and seen.fallbacks >= 1
    assert seen.packet_size <= 1472 and seen.split_packets > 0  # queued large chunks went out as pieces


async def test_apply_is_idempotent_and_needs_sctp() -> None:
    install_rtc_patches()
    pc = create_peer_connection(LOOPBACK)
    try:
        with pytest.raises(ValueError, match="no SCTP transport"):
            tuning.apply_fast_path(pc, 16384)
        pc.createDataChannel("x")
        assert pc.sctp is not None
        tuning.apply_fast_path(pc, 16384)
        handle_data = pc.sctp._handle_data
        tuning.apply_fast_path(pc, 16384)
        tuning.apply_fast_path(pc, None)
        tuning.apply_fast_path(pc, 8192)
        assert pc.sctp._handle_data is handle_data  # not wrapped twice, never changed
        assert tuned[pc.sctp].agreed == 16384
    finally:
        await pc.close()


async def test_local_only_then_upgrade() -> None:
    install_rtc_patches()
    pc = create_peer_connection(LOOPBACK)
    try:
        pc.createDataChannel("x")
        assert pc.sctp is not None
        tuning.apply_fast_path(pc, None)
        assert "_handle_data" not in vars(pc.sctp)  # nothing wire-visible yet
        assert type(pc.sctp.transport).__name__ != "RTCDtlsTransport"  # large reads installed
        tuning.apply_fast_path(pc, 16384)
        assert "_handle_data" in vars(pc.sctp)
    finally:
        await pc.close()


def test_capability_and_negotiation() -> None:
    options = RtcOptions()
    cap = tuning.local_capability(options)
    assert cap == {
        "version": tuning.CAPABILITY_VERSION,
        "max_packet": tuning.DTLS_MAX_PLAINTEXT,
        "datagram": MAX_DATAGRAM,
    }
    assert tuning.negotiate(options, cap) == 16384
    assert tuning.negotiate(options, {"version": 2, "max_packet": 4000}) == 4000
    assert tuning.negotiate(RtcOptions(max_packet=8192), cap) == 8192
    assert tuning.negotiate(STOCK, cap) is None
    bad: object
    for bad in (
        None,
        "yes",
        [],
        {},
        {"version": 1, "max_packet": 16384},  # the older opt-in fast path: no probes, no pieces
        {"version": 2, "max_packet": "9000"},
        {"version": 2, "max_packet": 100},
        {"version": 2, "max_packet": True},
    ):
        assert tuning.negotiate(options, bad) is None


def test_datagram_coalescing_is_negotiated_only_when_both_ends_split() -> None:
    options = RtcOptions()
    both = tuning.negotiate(options, tuning.local_capability(options))
    assert both == 16384 and both is not None and both.datagram == MAX_DATAGRAM
    older = tuning.negotiate(options, {"version": 2, "max_packet": 16384})  # a peer before coalescing
    assert older == 16384 and older is not None and older.datagram is None
    smaller = tuning.negotiate(options, {"version": 2, "max_packet": 16384, "datagram": 40000})
    assert smaller is not None and smaller.datagram == 40000
    off = RtcOptions(max_datagram=0)
    assert "datagram" not in (tuning.local_capability(off) or {})
    theirs = tuning.negotiate(off, tuning.local_capability(options))
    assert theirs is not None and theirs.datagram is None
    for bad in ("65507", 100, True, None, [1]):
        got = tuning.negotiate(options, {"version": 2, "max_packet": 16384, "datagram": bad})
        assert got == 16384 and got is not None and got.datagram is None


def test_options_refuse_bad_values_naming_them() -> None:
    with pytest.raises(ValueError, match="loopback"):
        RtcOptions(loopback="sometimes")
    with pytest.raises(ValueError, match="packet_size"):
        RtcOptions(packet_size="huge")
    with pytest.raises(ValueError, match="max_packet"):
        RtcOptions(max_packet=70000)
    for datagram in (1000, 70000, -1):
        with pytest.raises(ValueError, match="max_datagram"):
            RtcOptions(max_datagram=datagram)
    with pytest.raises(ValueError, match="burst_packets"):
        RtcOptions(burst_packets=2)
    with pytest.raises(ValueError, match="rtc_fast_path"):
        RtcOptions.from_settings(fast_path="warp")
    assert RtcOptions.from_settings(loopback_only=True, fast_path="off") == RtcOptions(
        loopback="only", packet_size="stock"
    )
    assert RtcOptions.from_settings(fast_path="loopback").packet_size == "auto"
    size = tuning.recommended_message_size(16384)
    assert size % tuning.user_data_size(16384) == 0 and size <= 262144
    assert tuning.recommended_message_size(None) % STOCK_USER_DATA == 0


def test_split_and_reassemble_round_trip_bounded() -> None:
    packet = os.urandom(16384)
    pieces = split_packet(7, packet, 1189)
    assert all(len(p) <= 1189 and p.startswith(PIECE_MAGIC) for p in pieces)
    joiner = Reassembler()
    assert [joiner.add(p) for p in reversed(pieces[1:])] == [None] * (len(pieces) - 1)
    assert joiner.add(pieces[0]) == packet  # any order
    assert joiner.add(b"\x00\x00\xf5\x01short") is None  # malformed: dropped
    assert joiner.add(pieces[0][:4] + b"\x00\x00\x00\x09\x00\x05\x00\x02" + b"x") is None  # index >= count
    for packet_id in range(100, 100 + 2 * MAX_PARTIAL_PACKETS):  # unfinished packets never pile up
        joiner.add(split_packet(packet_id, packet, 1189)[0])
    assert len(joiner._partial) <= MAX_PARTIAL_PACKETS
    with pytest.raises(ValueError, match="pieces"):
        split_packet(1, bytes(100000), 1189)
