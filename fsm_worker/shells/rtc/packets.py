"""SCTP packets of one DATA chunk built and parsed with fewer copies than aiortc (same bytes on the wire).

aiortc's ``serialize_packet`` copies a 16 KiB chunk three times (chunk bytes, the checksum input, the
packet), and ``parse_packet`` four times (two for the checksum input, the chunk body, the user data). Here a
sent packet is joined once (the checksum runs over the pieces) and a received one costs one copy for the
checksum and one for the user data. Anything but a packet of exactly one DATA chunk goes to aiortc.
"""

from __future__ import annotations

from struct import Struct
from typing import Any, Final

from aiortc.rtcsctptransport import DataChunk, padl
from google_crc32c import extend, value

_COMMON: Final = Struct("!HHL")  # source port, destination port, verification tag
_CHECKSUM: Final = Struct("<L")
_DATA_HEADER: Final = Struct("!BBHLHHL")  # type, flags, length, tsn, stream, sequence, protocol
_LENGTH: Final = Struct("!H")
_ZERO_CHECKSUM: Final = b"\x00\x00\x00\x00"
_COMMON_LENGTH: Final = 12
_CHUNK_HEADER_LENGTH: Final = 4
_DATA_OFFSET: Final = _COMMON_LENGTH + _DATA_HEADER.size  # where the user data starts


def data_packet(source_port: int, destination_port: int, tag: int, chunk: DataChunk) -> bytes:
    """The bytes ``serialize_packet`` makes for ``chunk``, joined once."""
    user_data = chunk.user_data
    length = _DATA_HEADER.size + len(user_data)
    common = _COMMON.pack(source_port, destination_port, tag)
    header = _DATA_HEADER.pack(
        0, chunk.flags, length, chunk.tsn, chunk.stream_id, chunk.stream_seq, chunk.protocol
    )
    crc = extend(value(common + _ZERO_CHECKSUM + header), user_data)
    padding = b"\x00" * padl(length)
    if padding:
        crc = extend(crc, padding)
    return b"".join((common, _CHECKSUM.pack(crc), header, user_data, padding))


def parse_data_packet(data: bytes) -> tuple[int, DataChunk] | None:
    """(verification tag, chunk) of a valid packet of exactly one DATA chunk; None for anything else."""
    length = len(data)
    if length <= _DATA_OFFSET or data[_COMMON_LENGTH] != DataChunk.type:
        return None
    chunk_length: int = _LENGTH.unpack_from(data, _COMMON_LENGTH + 2)[0]
    end = _COMMON_LENGTH + chunk_length
    if (
        chunk_length <= _DATA_HEADER.size
        or end > length
        or end + padl(chunk_length) <= length - _CHUNK_HEADER_LENGTH
    ):
        return None  # malformed, empty, or more chunks follow
    if _CHECKSUM.unpack_from(data, 8)[0] != extend(value(data[:8] + _ZERO_CHECKSUM), data[_COMMON_LENGTH:]):
        return None
    _type, flags, _length, tsn, stream_id, stream_seq, protocol = _DATA_HEADER.unpack_from(
        data, _COMMON_LENGTH
    )
    chunk = DataChunk(flags)
    chunk.tsn, chunk.stream_id, chunk.stream_seq, chunk.protocol = tsn, stream_id, stream_seq, protocol
    chunk.user_data = data[_DATA_OFFSET:end]
    tag: int = _COMMON.unpack_from(data)[2]
    return tag, chunk


def install_packet_codec(sctp: Any) -> None:
    """Send and receive ``sctp``'s single-DATA-chunk packets through :func:`data_packet` / :func:`parse_data_packet`.

    Call before other hooks of ``_handle_data`` (they wrap this one). Wire-invisible.
    """
    send_chunk, handle_data = sctp._send_chunk, sctp._handle_data

    async def send_fast(chunk: Any) -> None:
        if type(chunk) is not DataChunk:
            await send_chunk(chunk)
            return
        await sctp.transport._send_data(
            data_packet(sctp._local_port, sctp._remote_port, sctp._remote_verification_tag, chunk)
        )

    async def handle_fast(data: bytes) -> None:
        parsed = parse_data_packet(data)
        if parsed is None or parsed[0] != sctp._local_verification_tag:
            await handle_data(data)  # aiortc parses (and drops what it must) as before
            return
        await sctp._receive_chunk(parsed[1])
        if sctp._sack_needed:
            await sctp._send_sack()

    sctp._send_chunk = send_fast
    sctp._handle_data = handle_fast


__all__ = ["data_packet", "install_packet_codec", "parse_data_packet"]
