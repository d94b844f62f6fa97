"""The single-DATA-chunk packet codec makes and reads exactly aiortc's bytes; packet cuts for coalescing."""

from __future__ import annotations

import os

import pytest
from aiortc.rtcsctptransport import DataChunk, SackChunk, parse_packet, serialize_packet

from fsm_worker.shells.rtc import tuning
from fsm_worker.shells.rtc.aiortc_hooks import (
    RECORD_OVERHEAD_MAX,
    ConnectionTuning,
    tiled_packet_size,
    user_data_size,
)
from fsm_worker.shells.rtc.options import MAX_DATAGRAM, RtcOptions
from fsm_worker.shells.rtc.packets import data_packet, parse_data_packet
from fsm_worker.shells.rtc.tuning import Agreement


def _chunk(size: int, flags: int = 3) -> DataChunk:
    chunk = DataChunk(flags)
    chunk.tsn, chunk.stream_id, chunk.stream_seq, chunk.protocol = 0xFFFFFFF0, 7, 65535, 53
    chunk.user_data = os.urandom(size)
    return chunk


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 1000, 16268, 16356])
def test_data_packet_matches_aiortc_and_parses_back(size: int) -> None:
    chunk = _chunk(size)
    packet = serialize_packet(5000, 5001, 0xDEADBEEF, chunk)
    assert data_packet(5000, 5001, 0xDEADBEEF, chunk) == packet
    parsed = parse_data_packet(packet)
    assert parsed is not None
    _src, _dst, tag, [reference] = parse_packet(packet)
    assert parsed[0] == tag == 0xDEADBEEF
    assert vars(parsed[1]) == vars(reference)


def test_parse_leaves_everything_else_to_aiortc() -> None:
    packet = serialize_packet(5000, 5000, 1, _chunk(100))
    corrupt = bytearray(packet)
    corrupt[-1] ^= 1
    sack = SackChunk()
    sack.cumulative_tsn = 5
    two_chunks = packet + bytes(_chunk(8))  # a second chunk follows (checksum aside: never reached)
    for data in (bytes(corrupt), serialize_packet(5000, 5000, 1, sack), packet[:20], b"", two_chunks):
        assert parse_data_packet(data) is None
    header = bytearray(packet)
    header[14:16] = (len(packet) + 8).to_bytes(2, "big")  # chunk longer than the packet
    assert parse_data_packet(bytes(header)) is None


def test_packets_are_cut_so_four_records_share_the_largest_datagram() -> None:
    size = tiled_packet_size(16384, MAX_DATAGRAM)
    assert 4 * (size + RECORD_OVERHEAD_MAX) <= MAX_DATAGRAM < 4 * (16384 + RECORD_OVERHEAD_MAX)
    assert size >= 16384 - 16384 // 32
    assert tiled_packet_size(16384, None) == 16384
    assert tiled_packet_size(16384, 2 * 1189) == 16384  # no datagram fits two: nothing to gain
    state = ConnectionTuning(RtcOptions())
    state.use_packet_size(16384)  # not coalescing: full packets
    assert state.user_data == user_data_size(16384)
    state.datagram_limit, state.coalesce_from = MAX_DATAGRAM, 16384
    state.use_packet_size(16384)
    assert state.user_data == user_data_size(size) and state.split_above == state.packet_size == 16384
    state.use_packet_size(8192)  # smaller than the coalesced size: no cut
    assert state.user_data == user_data_size(8192)


def test_transfer_messages_are_whole_data_chunks() -> None:
    for agreed in (Agreement(16384, MAX_DATAGRAM), Agreement(16384), Agreement(8192, MAX_DATAGRAM)):
        window = tuning.transfer_window(agreed)
        packet = tiled_packet_size(min(agreed, 16384), agreed.datagram)
        assert window["chunk_size"] % user_data_size(packet) == 0
        assert 256 * 1024 - user_data_size(packet) < window["chunk_size"] <= 256 * 1024
    assert tuning.transfer_window(None)["chunk_size"] <= 64 * 1024
