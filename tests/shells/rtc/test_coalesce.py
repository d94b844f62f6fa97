"""Several DTLS records per datagram: the receive-side split and the send-side collector (no network)."""

from __future__ import annotations

import struct
from typing import Any

from fsm_worker.shells.rtc.coalesce import (
    Coalescer,
    install_record_split,
    is_application_record,
    split_records,
)


def record(payload: bytes, content_type: int = 23, version: bytes = b"\xfe\xfd") -> bytes:
    """A DTLS 1.2-style record: type, version, epoch, sequence number, length, payload."""
    return (
        bytes([content_type])
        + version
        + b"\x00\x01"
        + b"\x00" * 6
        + struct.pack("!H", len(payload))
        + payload
    )


def test_split_records_only_for_whole_dtls12_records() -> None:
    a, b, c = record(b"a" * 100), record(b"b" * 3), record(b"c" * 16000, content_type=22)
    assert split_records(a + b + c) == [a, b, c]
    assert split_records(a) is None  # one record: passed on unchanged
    assert split_records(a + b[:-1]) is None  # a length that does not tile the datagram
    assert split_records(a + b + b"\x00") is None  # trailing garbage
    assert split_records(a + record(b"x", version=b"\x03\x03")) is None  # not a DTLS version
    assert split_records(a + record(b"x", content_type=30)) is None  # not a DTLS 1.2 content type
    assert split_records(b"") is None


def test_is_application_record() -> None:
    assert is_application_record(record(b"x" * 10))
    assert not is_application_record(record(b"x" * 10, content_type=22))  # handshake: never held
    assert not is_application_record(record(b"x" * 10)[:-1])
    assert not is_application_record(b"\x17")


class FakeReceiver:
    def __init__(self) -> None:
        self.queued: list[tuple[bytes, int]] = []

    def data_received(self, data: bytes, component: int) -> None:
        self.queued.append((data, component))


class FakeCandidate:
    component = 1


class FakeProtocol:
    """aioice's StunProtocol shape: datagram_received, receiver, local_candidate."""

    def __init__(self) -> None:
        self.receiver = FakeReceiver()
        self.local_candidate = FakeCandidate()
        self.raw: list[Any] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.raw.append(data)


def test_record_split_delivers_each_record_and_leaves_stun_alone() -> None:
    protocol = FakeProtocol()
    install_record_split(protocol)
    install_record_split(protocol)  # idempotent: one wrapper
    a, b = record(b"a" * 50), record(b"b" * 60)
    protocol.datagram_received(a + b, ("127.0.0.1", 1))
    protocol.datagram_received(a, ("127.0.0.1", 1))
    stun = b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + b"\x00" * 12
    protocol.datagram_received(stun, ("127.0.0.1", 1))
    protocol.datagram_received(b"", ("127.0.0.1", 1))
    assert protocol.receiver.queued == [(a, 1), (b, 1), (a, 1)]
    assert protocol.raw == [stun, b""]  # STUN (and anything not DTLS) takes aioice's own path


def test_coalescer_holds_records_until_taken() -> None:
    coalescer = Coalescer()
    assert coalescer.take() is None
    a, b = record(b"a" * 100), record(b"b" * 100)
    assert coalescer.room(a, len(a) + len(b))
    coalescer.add(a)
    assert coalescer.room(b, len(a) + len(b)) and not coalescer.room(b, len(a) + len(b) - 1)
    coalescer.add(b)
    assert coalescer.take() == a + b
    assert coalescer.take() is None
    coalescer.add(a)
    assert coalescer.take() == a  # alone: not counted as coalesced
    assert (coalescer.records, coalescer.datagrams) == (2, 1)
