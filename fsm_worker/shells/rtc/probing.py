"""The shell of the packet-size search: probe packets, oversize splitting, and feeding aiortc's events in.

Only on a connection whose peer advertised the capability (both ends run this code):

- a **probe** is one SCTP packet of exactly the probed size: a HEARTBEAT chunk whose info carries
  ``PROBE_TAG`` + the probe id, then a PAD chunk (RFC 4820, type 132; receivers skip unknown chunks). The
  peer's SCTP answers with a small HEARTBEAT-ACK, which is intercepted here. A lost probe costs nothing.
- **oversize splitting**: DATA chunks already cut for a larger size when the path shrinks (a black hole)
  would never get through again, so an SCTP packet larger than the current size is sent as pieces
  (``PIECE_MAGIC`` header; SCTP never uses source port 0, so a piece cannot be mistaken for a packet)
  and reassembled by the peer before its SCTP sees it. Loss of a piece loses the packet; SCTP resends it.

The decisions come from :class:`~fsm_worker.protocol.rtc.packet_size.PacketSizeSearch`; this module only
turns aiortc's activity into its events and carries out what it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, Final

import attrs
from aiortc.rtcsctptransport import HeartbeatAckChunk, HeartbeatChunk, RTCSctpTransport
from google_crc32c import value as crc32c

from fsm_worker.protocol.rtc.packet_size import (
    Begin,
    DataAcked,
    DataInFlight,
    Decision,
    Event,
    PacketSizeSearch,
    ProbeAcked,
    Retransmit,
    SearchSettings,
    SendProbe,
    TimerFired,
    UsePacketSize,
)
from fsm_worker.shells.rtc.aiortc_hooks import ConnectionTuning, spawn, user_data_size

PROBE_TAG: Final = b"fsmP"
_HEARTBEAT_INFO: Final = 1
_PAD_CHUNK: Final = 132
PIECE_MAGIC: Final = b"\x00\x00\xf5\x01"
_PIECE_HEADER: Final = struct.Struct("!4sIHH")  # magic, packet id, index, count
MAX_PIECES: Final = 64
MAX_PARTIAL_PACKETS: Final = 32  # reassembly memory bound: at most this many packets in progress


def split_packet(packet_id: int, data: bytes, limit: int) -> list[bytes]:
    """``data`` as pieces of at most ``limit`` bytes each, header included."""
    room = limit - _PIECE_HEADER.size
    count = -(-len(data) // room)
    if count > MAX_PIECES:
        raise ValueError(f"packet of {len(data)} B needs {count} pieces of {limit} B; at most {MAX_PIECES}")
    return [
        _PIECE_HEADER.pack(PIECE_MAGIC, packet_id, index, count) + data[index * room : (index + 1) * room]
        for index in range(count)
    ]


class Reassembler:
    """Pieces in, whole SCTP packets out; bounded (the oldest unfinished packet is dropped first)."""

    def __init__(self) -> None:
        self._partial: OrderedDict[int, list[bytes | None]] = OrderedDict()
        self.packets = 0

    def add(self, data: bytes) -> bytes | None:
        """One piece; the whole packet once its last piece arrived, else None. Malformed pieces are dropped."""
        if len(data) <= _PIECE_HEADER.size:
            return None
        _magic, packet_id, index, count = _PIECE_HEADER.unpack_from(data)
        if not 0 < count <= MAX_PIECES or index >= count:
            return None
        parts = self._partial.get(packet_id)
        if parts is None or len(parts) != count:
            parts = [None] * count
            self._partial[packet_id] = parts
            while len(self._partial) > MAX_PARTIAL_PACKETS:
                self._partial.popitem(last=False)
        parts[index] = data[_PIECE_HEADER.size :]
        if any(part is None for part in parts):
            return None
        del self._partial[packet_id]
        self.packets += 1
        return b"".join(part for part in parts if part is not None)


def probe_packet(sctp: RTCSctpTransport, probe_id: int, size: int) -> bytes:
    """An SCTP packet of ``size`` bytes: HEARTBEAT(probe tag + id) + PAD."""
    heartbeat = HeartbeatChunk()
    heartbeat.params = [(_HEARTBEAT_INFO, PROBE_TAG + struct.pack("!I", probe_id))]
    chunks = bytes(heartbeat)
    pad = (size - 12 - len(chunks)) // 4 * 4
    chunks += struct.pack("!BBH", _PAD_CHUNK, 0, pad) + bytes(pad - 4)
    header = struct.pack("!HHL", sctp._local_port, sctp._remote_port, sctp._remote_verification_tag)
    checksum = crc32c(header + b"\x00\x00\x00\x00" + chunks)
    return header + struct.pack("<L", checksum) + chunks


def _probe_id(chunk: HeartbeatAckChunk) -> int | None:
    for kind, value in chunk.params:
        if kind == _HEARTBEAT_INFO and len(value) == 8 and value[:4] == PROBE_TAG:
            probe_id: int = struct.unpack("!I", value[4:])[0]
            return probe_id
    return None


class PathProber:
    """Drives one connection's :class:`PacketSizeSearch` from its SCTP transport (the sending side)."""

    def __init__(
        self,
        sctp: RTCSctpTransport,
        state: ConnectionTuning,
        settings: SearchSettings,
        send_unsplit: Callable[[bytes], Coroutine[Any, Any, None]],
    ) -> None:
        self.core = PacketSizeSearch(settings)
        self._sctp = sctp
        self._state = state
        self._send_unsplit = send_unsplit
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._begun = False
        self.probes_sent = 0
        self.probes_acked = 0
        self.fallbacks = 0
        self.history: list[UsePacketSize] = []
        self.changed_at: list[float] = []  # loop time of each size change (benchmarks: fallback latency)

    def feed(self, event: Event) -> None:
        """One event into the core; carry out its decisions; re-arm the one timer."""
        if self._sctp._association_state == RTCSctpTransport.State.CLOSED and self._begun:
            self._cancel_timer()
            return
        for decision in self.core.handle(event, self._loop.time()):
            self._carry_out(decision)
        deadline = self.core.next_deadline()
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            self._cancel_timer()
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, None
        self.feed(TimerFired())

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, None

    def _carry_out(self, decision: Decision) -> None:
        if isinstance(decision, SendProbe):
            self.probes_sent += 1
            spawn(self._send_probe(decision.probe_id, decision.size))
        elif isinstance(decision, UsePacketSize):
            self.history.append(decision)
            self.changed_at.append(self._loop.time())
            if decision.size < self._state.packet_size:
                self.fallbacks += 1
            self._state.use_packet_size(decision.size)
            sctp = self._sctp
            sctp._cwnd = max(
                sctp._cwnd, self._state.options.initial_cwnd_packets * user_data_size(decision.size)
            )
        elif isinstance(decision, Retransmit) and self._sctp._sent_queue:
            self._sctp._t3_cancel()
            self._sctp._t3_expired()

    async def _send_probe(self, probe_id: int, size: int) -> None:
        with contextlib.suppress(ConnectionError):  # the transport closed: a lost probe
            await self._send_unsplit(probe_packet(self._sctp, probe_id, size))

    # --- hooks on the SCTP transport ----------------------------------------------------------------

    def on_transmitted(self) -> None:
        if not self._begun and self._sctp._association_state == RTCSctpTransport.State.ESTABLISHED:
            self._begun = True
            self.feed(Begin())
        if self._sctp._sent_queue:
            self.feed(DataInFlight())

    def on_sack(self) -> None:
        self.feed(DataAcked(in_flight=bool(self._sctp._sent_queue), rtt=self._sctp._srtt))

    def on_probe_ack(self, probe_id: int) -> None:
        self.probes_acked += 1
        self.feed(ProbeAcked(probe_id))


def install_prober(sctp: RTCSctpTransport, state: ConnectionTuning, send_unsplit: Any) -> PathProber | None:
    """Hook a :class:`PathProber` and the piece reassembly into ``sctp`` (call before the scope hooks).

    Returns None (and hooks only the reassembly) when no probe size fits what both ends read.
    """
    settings = search_settings_for(state)
    prober = PathProber(sctp, state, settings, send_unsplit) if settings is not None else None
    reassembler = Reassembler()
    handle_data, receive_chunk = sctp._handle_data, sctp._receive_chunk
    receive_sack, transmit = sctp._receive_sack_chunk, sctp._transmit

    async def handled(data: bytes) -> None:
        if data.startswith(PIECE_MAGIC):
            whole = reassembler.add(data)
            if whole is None:
                return
            data = whole
        await handle_data(data)

    sctp._handle_data = handled  # type: ignore[method-assign]
    if prober is None:
        return None

    async def received(chunk: Any) -> None:
        if isinstance(chunk, HeartbeatAckChunk):
            probe_id = _probe_id(chunk)
            if probe_id is not None:
                prober.on_probe_ack(probe_id)
                return
        await receive_chunk(chunk)

    async def sacked(chunk: Any) -> None:
        await receive_sack(chunk)
        prober.on_sack()

    async def transmitted() -> None:
        await transmit()
        prober.on_transmitted()

    sctp._receive_chunk = received  # type: ignore[method-assign]
    sctp._receive_sack_chunk = sacked  # type: ignore[method-assign]
    sctp._transmit = transmitted  # type: ignore[method-assign]
    state.prober = prober
    return prober


def search_settings_for(state: ConnectionTuning) -> SearchSettings | None:
    """The options' search limited to sizes both ends read (None: no size fits)."""
    search = state.options.search
    sizes = tuple(size for size in search.candidates if size <= (state.agreed or 0))
    if not sizes:
        return None
    return search if sizes == search.candidates else attrs.evolve(search, candidates=sizes)
