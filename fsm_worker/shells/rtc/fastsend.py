"""A fused send path for new DATA chunks towards a capable peer whose records are coalesced.

aiortc sends each DATA chunk through five coroutine layers (``_transmit`` → ``_send_chunk`` → DTLS
``_send_data`` → ``_write_ssl`` → the coalescer) and pyOpenSSL's per-call checks. While a burst's records
are being coalesced (``aiortc_hooks.ConnectionTuning.coalescing``), this sends each new chunk with no
``await`` at all: the packet is built by ``packets.data_packet``, encrypted by one ``SSL_write`` and read
back by one ``BIO_read`` into a reused buffer, and added to the coalescer; only a full datagram awaits the
transport. The bookkeeping is aiortc's own (sent queue, flight size, counters, T3 timer) in its order.

Anything unusual runs aiortc's ``_transmit`` unchanged: a FORWARD TSN to send, chunks marked for
retransmission, fast recovery, no coalescing at this packet size, a chunk too large for the current packet
size (split by the DTLS hook), or a connection not in the connected state. The same bytes go on the wire.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcsctptransport import DataChunk

from fsm_worker.shells.rtc.aiortc_hooks import ConnectionTuning
from fsm_worker.shells.rtc.packets import data_packet

try:  # pyOpenSSL's cffi binding: SSL_write / BIO_read without the per-call wrappers
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib
except ImportError:  # pragma: no cover - another pyOpenSSL: the fused path stays off
    _ffi = _lib = None


class FusedSender:
    """One connection's fused transmit; ``records``: DATA chunks it sent (evidence it ran)."""

    def __init__(self, sctp: Any, state: ConnectionTuning, fallback: Callable[[], Awaitable[None]]) -> None:
        self._sctp = sctp
        self._state = state
        self._fallback = fallback
        self._buffer: Any = None
        self._buffer_size = 0
        self.records = 0
        self.fallbacks = 0

    def _usable(self) -> Any:
        """The DTLS transport if the fused path may run now, else None."""
        sctp, state = self._sctp, self._state
        dtls = sctp.transport
        if (
            _lib is None
            or state.coalescing() is None
            or not state.coalescer.depth
            or sctp._forward_tsn_chunk is not None
            or sctp._fast_recovery_exit is not None
            or getattr(dtls, "_state", None) is not DtlsState.CONNECTED
            or not hasattr(dtls, "flush_coalesced")
            or any(chunk._retransmit for chunk in sctp._sent_queue)
        ):
            return None
        return dtls

    def _record(self, conn: Any, packet: bytes) -> bytes:
        """Encrypt ``packet`` into one DTLS record (pyOpenSSL's own error handling on failure)."""
        size = self._state.bio_read_size
        if self._buffer_size < size:
            self._buffer, self._buffer_size = _ffi.new("char[]", size), size
        written = _lib.SSL_write(conn._ssl, packet, len(packet))
        if written <= 0:
            conn._raise_ssl_error(conn._ssl, written)
        read = _lib.BIO_read(conn._from_ssl, self._buffer, size)
        if read <= 0:
            conn._handle_bio_errors(conn._from_ssl, read)
            return b""
        return _ffi.buffer(self._buffer, read)[:]  # type: ignore[no-any-return]

    async def transmit(self) -> None:
        """aiortc's ``_transmit`` for the common case; aiortc's own otherwise."""
        dtls = self._usable()
        if dtls is None:
            self.fallbacks += 1
            await self._fallback()
            return
        sctp, state = self._sctp, self._state
        coalescer, limit = state.coalescer, state.coalescing()
        assert limit is not None
        conn = getattr(dtls._ssl, "_conn", dtls._ssl)
        queue, sent = sctp._outbound_queue, sctp._sent_queue
        cwnd = min(sctp._flight_size + 4 * state.user_data, sctp._cwnd)
        ports = (sctp._local_port, sctp._remote_port, sctp._remote_verification_tag)
        split_above = state.split_above
        now = time.time()
        while queue and sctp._flight_size < cwnd:
            chunk = queue[0]
            if type(chunk) is not DataChunk:
                await self._fallback()
                return
            packet = data_packet(*ports, chunk)
            if split_above is not None and len(packet) > split_above:
                await self._fallback()  # the DTLS hook splits it
                return
            queue.popleft()
            sent.append(chunk)
            sctp._flight_size_increase(chunk)
            chunk._sent_count += 1
            chunk._sent_time = now
            record = self._record(conn, packet)
            self.records += 1
            if record:
                if not coalescer.room(record, limit):
                    await dtls.flush_coalesced()
                coalescer.add(record)
            if not sctp._t3_handle:
                sctp._t3_start()


def install_fused_transmit(sctp: Any, state: ConnectionTuning) -> FusedSender | None:
    """Replace ``sctp``'s innermost ``_transmit`` (call before the hooks that wrap it)."""
    if _lib is None or state.datagram_limit is None:
        return None
    sender = FusedSender(sctp, state, sctp._transmit)
    sctp._transmit = sender.transmit
    state.sender = sender
    return sender


__all__ = ["FusedSender", "install_fused_transmit"]
