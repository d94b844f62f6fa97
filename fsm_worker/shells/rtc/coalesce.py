"""Several DTLS records in one UDP datagram (RFC 6347 §4.1.1 allows it), and splitting them on receipt.

Sending a 16 KiB SCTP packet costs one DTLS record, one ``sendto`` through aioice and asyncio, and one
wake-up of the receiver. The kernel's cost per byte of a fragmented datagram falls as the datagram grows
(measured on a 1500-MTU loopback: 1.56 ms/MiB at 16 KiB, 1.02 ms/MiB at 64 KiB), and the Python cost is per
datagram on both ends. So, towards a peer that said it splits such datagrams, the records of one SCTP
transmit burst share datagrams of up to ``limit`` bytes, while the path carries the largest probed packet.

Receiving (every tuned connection, any peer): a datagram that is exactly a sequence of whole DTLS 1.2
records is handed on one record at a time, because aiortc reads one record per datagram. Anything else
(one record, STUN, DTLS 1.3 unified headers, a length that does not tile the datagram) passes unchanged.
"""

from __future__ import annotations

import struct
from typing import Any, Final

DTLS_HEADER: Final = 13  # type(1) version(2) epoch(2) sequence(6) length(2)
_LENGTH: Final = struct.Struct("!H")
_CONTENT_TYPES: Final = range(20, 26)  # change_cipher_spec .. heartbeat (DTLS 1.2 record header)
_APPLICATION_DATA: Final = 23
_VERSIONS: Final = (b"\xfe\xff", b"\xfe\xfd")  # DTLS 1.0, 1.2


def _record_length(data: bytes | memoryview, offset: int) -> int | None:
    """The whole length (header included) of the DTLS 1.2-style record at ``offset``, or None."""
    if len(data) - offset < DTLS_HEADER or data[offset] not in _CONTENT_TYPES:
        return None
    if bytes(data[offset + 1 : offset + 3]) not in _VERSIONS:
        return None
    length: int = _LENGTH.unpack_from(data, offset + 11)[0]
    return DTLS_HEADER + length


def split_records(datagram: bytes) -> list[bytes] | None:
    """The records of a datagram made of two or more whole DTLS 1.2 records; None for anything else."""
    offset, ends = 0, []
    while offset < len(datagram):
        size = _record_length(datagram, offset)
        if size is None or offset + size > len(datagram):
            return None
        offset += size
        ends.append(offset)
    if len(ends) < 2:
        return None
    view = memoryview(datagram)
    return [bytes(view[start:end]) for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def is_application_record(record: bytes) -> bool:
    """One whole DTLS 1.2 application-data record (what may be coalesced)."""
    return (
        len(record) > DTLS_HEADER
        and record[0] == _APPLICATION_DATA
        and _record_length(record, 0) == len(record)
    )


def install_record_split(protocol: Any) -> None:
    """Wrap one aioice protocol's ``datagram_received``: coalesced records reach aiortc one at a time.

    A datagram whose first byte is 20..63 is DTLS, never STUN (RFC 7983), so it goes straight to the
    connection's queue, where aioice would first try, and fail, to parse it as STUN.
    """
    received = protocol.datagram_received
    if getattr(received, "_fsm_split", False):
        return
    receiver = getattr(protocol, "receiver", None)
    deliver = getattr(receiver, "data_received", None)
    component = getattr(getattr(protocol, "local_candidate", None), "component", None)
    if deliver is None or component is None:
        deliver = None

    def datagram_received(data: bytes, addr: Any) -> None:
        if not data or not 20 <= data[0] < 64:
            received(data, addr)
        elif deliver is None:
            for record in split_records(data) or (data,):
                received(record, addr)
        else:
            for record in split_records(data) or (data,):
                deliver(record, component)

    datagram_received._fsm_split = True  # type: ignore[attr-defined]
    protocol.datagram_received = datagram_received


class Coalescer:
    """Collects one burst's application records; the caller sends :meth:`take`'s datagram."""

    __slots__ = ("_parts", "_size", "datagrams", "depth", "records")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self.depth = 0
        """Nesting of open bursts (records are held only while > 0)."""
        self.records = 0
        """Records sent in datagrams carrying more than one."""
        self.datagrams = 0
        """Datagrams that carried more than one record."""

    def room(self, record: bytes, limit: int) -> bool:
        """Whether ``record`` fits into the pending datagram."""
        return self._size + len(record) <= limit

    def add(self, record: bytes) -> None:
        self._parts.append(record)
        self._size += len(record)

    def take(self) -> bytes | None:
        """The pending datagram (None: nothing pending); the collector is empty afterwards."""
        if not self._parts:
            return None
        if len(self._parts) == 1:
            data = self._parts[0]
        else:
            data = b"".join(self._parts)
            self.records += len(self._parts)
            self.datagrams += 1
        self._parts.clear()
        self._size = 0
        return data
