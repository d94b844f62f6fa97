"""Per-connection hooks into aiortc's DTLS and SCTP transports and aioice's sockets (no global patches).

Everything here is applied to one connection's transport *instances*; other connections in the process
keep aiortc's stock behaviour. The decisions (which packet size, when to probe) are not made here: see
``fsm_worker.protocol.rtc.packet_size`` and its shell ``fsm_worker.shells.rtc.probing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Final

import attrs
from aiortc import rtcsctptransport as _sctp
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcsctptransport import RTCSctpTransport
from OpenSSL import SSL

try:  # pyOpenSSL's cffi binding: how many bytes wait in a connection's outgoing memory BIO
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib

    _BIO_PENDING: Callable[[Any, Any], int] | None = _lib.BIO_get_mem_data
except (ImportError, AttributeError):  # pragma: no cover - another pyOpenSSL: always read, as aiortc does
    _BIO_PENDING = None

from fsm_worker.shells.rtc.coalesce import Coalescer, install_record_split, is_application_record
from fsm_worker.shells.rtc.options import DTLS_MAX_PLAINTEXT, STOCK_MAX_PACKET, RtcOptions

# Room for the DTLS record header, explicit nonce and AEAD tag around a full record.
DTLS_RECORD_SLACK: Final = 256
SCTP_OVERHEAD: Final = _sctp.SCTP_COMMON_HEADER_LENGTH + _sctp.SCTP_DATA_CHUNK_HEADER_LENGTH
STOCK_USER_DATA: Final[int] = _sctp.USERDATA_MAX_LENGTH
_STOCK_DTLS_READ: Final = 1500


#: Most bytes a DTLS 1.2 record adds around its plaintext (AES-GCM: 37; CBC with HMAC-SHA1: up to 65).
RECORD_OVERHEAD_MAX: Final = 80


def user_data_size(max_packet: int) -> int:
    """User bytes per DATA chunk for an SCTP packet of ``max_packet`` bytes (4-byte aligned)."""
    return (max_packet - SCTP_OVERHEAD) // 4 * 4


def tiled_packet_size(size: int, datagram: int | None) -> int:
    """The packet size to cut DATA chunks for, so that one more record fits into each coalesced datagram.

    With 16 KiB packets, three records fill a 65,507-byte datagram and leave a quarter empty; packets
    0.5 % smaller let four share it. Shrinks only if that costs at most 1/32 of the packet; else ``size``.
    """
    if not datagram:
        return size
    records = datagram // (size + RECORD_OVERHEAD_MAX)
    fit = datagram // (records + 1) - RECORD_OVERHEAD_MAX
    return fit if fit >= size - size // 32 else size


@attrs.define(eq=False)
class ConnectionTuning:
    """One connection's tuning state, kept on the transports it tunes."""

    options: RtcOptions
    agreed: int | None = None
    """Largest packet both ends read (None: the peer did not advertise the capability)."""
    packet_size: int = STOCK_MAX_PACKET
    """SCTP packet size for new DATA chunks on this path."""
    user_data: int = STOCK_USER_DATA
    bio_read_size: int = _STOCK_DTLS_READ
    split_above: int | None = None
    """Sends larger than this are split into pieces the peer reassembles (capable peer only)."""
    unsacked: int = 0
    sack_flush_pending: bool = False
    sockets_done: bool = False
    datagrams_sent: int = 0
    bytes_sent: int = 0
    largest_datagram: int = 0
    split_packets: int = 0
    prober: Any = None
    sender: Any = None  # fastsend.FusedSender, when installed
    datagram_limit: int | None = None
    """Largest UDP datagram of coalesced records the peer splits (None: one record per datagram)."""
    coalesce_from: int | None = None
    """Records are coalesced only while the path carries packets of this size (the largest probed)."""
    coalescer: Coalescer = attrs.field(factory=Coalescer)

    def coalescing(self) -> int | None:
        """The datagram limit now: only while the largest probed packet size is in use."""
        if self.datagram_limit is None or self.coalesce_from is None or self.packet_size < self.coalesce_from:
            return None
        return self.datagram_limit

    def use_packet_size(self, size: int) -> None:
        """New DATA chunks are cut for ``size``-byte packets; anything larger already queued is split.

        While records are coalesced at this size, chunks are cut a little smaller so that the datagram
        holds one record more (:func:`tiled_packet_size`).
        """
        self.packet_size = size
        coalesced = self.coalesce_from is not None and size >= self.coalesce_from
        self.user_data = user_data_size(tiled_packet_size(size, self.datagram_limit) if coalesced else size)
        self.split_above = size


tuned: weakref.WeakKeyDictionary[Any, ConnectionTuning] = weakref.WeakKeyDictionary()
# Strong references to fire-and-forget tasks (the loop keeps only weak ones).
background: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any]) -> None:
    """Run ``coro`` in the background, keeping a reference until it ends."""
    task = asyncio.ensure_future(coro)
    background.add(task)
    task.add_done_callback(background.discard)


# --- DTLS: aiortc calls self._ssl.recv(1500) / bio_read(1500); serve those calls from larger buffers ------


class _SslProxy:
    """Wraps pyOpenSSL's ``Connection``: larger ``recv`` always, larger ``bio_read`` when agreed."""

    def __init__(self, conn: Any, state: ConnectionTuning) -> None:
        self._conn = conn
        self._state = state
        # Called once per record: bound here, not looked up through __getattr__ each time (~1 µs a call).
        self.send = conn.send
        self.bio_write = conn.bio_write

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def recv(self, bufsiz: int) -> bytes:
        data: bytes = self._conn.recv(max(bufsiz, DTLS_MAX_PLAINTEXT))
        return data

    def bio_read(self, bufsiz: int) -> bytes:
        data: bytes = self._conn.bio_read(max(bufsiz, self._state.bio_read_size))
        state = self._state  # every outgoing datagram passes here: the evidence of what went on the wire
        state.datagrams_sent += 1
        state.bytes_sent += len(data)
        state.largest_datagram = max(state.largest_datagram, len(data))
        return data


def _get_ssl(self: Any) -> Any:
    return self.__dict__.get("_fsm_ssl")


def _set_ssl(self: Any, conn: Any) -> None:
    wrap = conn is not None and not isinstance(conn, _SslProxy)
    self.__dict__["_fsm_ssl"] = _SslProxy(conn, tuned[self]) if wrap else conn


#: Splits one SCTP packet into pieces of at most ``limit`` bytes: (packet, limit) -> pieces.
Splitter = Callable[[bytes, int], list[bytes]]


class _TunedDtlsTransport(RTCDtlsTransport):  # type: ignore[misc]
    """Same transport; ``_ssl`` goes through :class:`_SslProxy`, oversize sends are split for the path."""

    _ssl = property(_get_ssl, _set_ssl)
    _fsm_splitter: Splitter | None = None
    _fsm_state: ConnectionTuning

    async def _send_data(self, data: bytes) -> None:
        state = self._fsm_state  # every datagram passes here: no weak-dictionary lookup
        limit = state.split_above
        if limit is not None and len(data) > limit and self._fsm_splitter is not None:
            state.split_packets += 1
            for piece in self._fsm_splitter(data, limit):
                await super()._send_data(piece)
            return
        await super()._send_data(data)

    async def send_unsplit(self, data: bytes) -> None:
        """Send ``data`` as one record whatever its size (probe packets)."""
        await super()._send_data(data)

    async def _write_ssl(self) -> None:
        state = self._fsm_state
        coalescer = state.coalescer
        limit = state.coalescing() if coalescer.depth else None
        if limit is None:
            await self.flush_coalesced()  # order: what is held goes first
            if not _nothing_to_write(self._ssl):
                await super()._write_ssl()
            return
        try:
            conn = getattr(self._ssl, "_conn", self._ssl)  # past the proxy: counted when the datagram goes
            record: bytes = conn.bio_read(max(state.bio_read_size, _STOCK_DTLS_READ))
        except SSL.Error:
            return
        if not record:
            return
        if not is_application_record(record):
            await self.flush_coalesced()
            await self._send_datagram(record)
            return
        if not coalescer.room(record, limit):
            await self.flush_coalesced()
        coalescer.add(record)

    async def flush_coalesced(self) -> None:
        """Send the records held for the current burst as one datagram."""
        data = self._fsm_state.coalescer.take()
        if data is not None:
            await self._send_datagram(data)

    async def _send_datagram(self, data: bytes) -> None:
        state = self._fsm_state
        state.datagrams_sent += 1
        state.bytes_sent += len(data)
        state.largest_datagram = max(state.largest_datagram, len(data))
        await self.transport._send(data)
        counters = self.__dict__  # aiortc's own (name-mangled) statistics, as its _write_ssl keeps them
        counters["_RTCDtlsTransport__tx_bytes"] = counters.get("_RTCDtlsTransport__tx_bytes", 0) + len(data)
        counters["_RTCDtlsTransport__tx_packets"] = counters.get("_RTCDtlsTransport__tx_packets", 0) + 1


def _nothing_to_write(ssl: Any) -> bool:
    """True when the connection's outgoing BIO is known to be empty (aiortc would read, fail and catch)."""
    bio = getattr(getattr(ssl, "_conn", ssl), "_from_ssl", None)
    return _BIO_PENDING is not None and bio is not None and _BIO_PENDING(bio, _ffi.NULL) == 0


def install_dtls_buffers(dtls: RTCDtlsTransport, state: ConnectionTuning) -> None:
    """Large DTLS reads (invisible on the wire); the class swap is per instance."""
    if type(dtls) is not RTCDtlsTransport:
        return  # already tuned, or a subclass we do not know
    tuned[dtls] = state
    current = dtls.__dict__.pop("_ssl", None)
    dtls.__class__ = _TunedDtlsTransport
    dtls.__dict__["_fsm_state"] = state
    dtls._ssl = current


def enable_large_records(dtls: RTCDtlsTransport, state: ConnectionTuning, splitter: Splitter) -> None:
    """Capable peer: write records up to ``state.agreed`` bytes, split oversize sends with ``splitter``."""
    assert state.agreed is not None
    state.bio_read_size = state.agreed + DTLS_RECORD_SLACK
    state.split_above = state.packet_size
    if isinstance(dtls, _TunedDtlsTransport):
        dtls._fsm_splitter = splitter


# --- SCTP: aiortc reads the chunk size from the module constant USERDATA_MAX_LENGTH (fragmenting, burst
# limit, cwnd steps). Set it to this connection's value around every step of its coroutines, so other
# connections in the process keep the stock value. -----------------------------------------------------


class _ScopedUserData:
    """Awaitable running ``coro`` with ``USERDATA_MAX_LENGTH`` set to the state's value during each step."""

    __slots__ = ("_coro", "_state")

    def __init__(self, coro: Coroutine[Any, Any, Any], state: ConnectionTuning) -> None:
        self._coro = coro
        self._state = state

    def __await__(self) -> Generator[Any, Any, Any]:
        inner = self._coro.__await__()
        sent: Any = None
        error: BaseException | None = None
        while True:
            saved = _sctp.USERDATA_MAX_LENGTH
            _sctp.USERDATA_MAX_LENGTH = self._state.user_data
            try:
                yielded = inner.send(sent) if error is None else inner.throw(error)
            except StopIteration as stop:
                return stop.value
            finally:
                _sctp.USERDATA_MAX_LENGTH = saved
            try:
                sent, error = (yield yielded), None
            except BaseException as exc:  # delivered into the wrapped coroutine
                sent, error = None, exc


def _scoped_async(
    method: Callable[..., Coroutine[Any, Any, Any]], state: ConnectionTuning
) -> Callable[..., Awaitable[Any]]:
    async def run(*args: Any, **kwargs: Any) -> Any:
        if state.user_data == _sctp.USERDATA_MAX_LENGTH:
            # Called inside this connection's scope already (its outer step restores the value at every
            # suspension), or the value is this connection's anyway: another layer would change nothing.
            return await method(*args, **kwargs)
        return await _ScopedUserData(method(*args, **kwargs), state)

    return run


def _scoped_sync(method: Callable[..., Any], state: ConnectionTuning) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        if state.user_data == _sctp.USERDATA_MAX_LENGTH:
            return method(*args, **kwargs)
        saved = _sctp.USERDATA_MAX_LENGTH
        _sctp.USERDATA_MAX_LENGTH = state.user_data
        try:
            return method(*args, **kwargs)
        finally:
            _sctp.USERDATA_MAX_LENGTH = saved

    return run


# Every path into code that reads USERDATA_MAX_LENGTH starts at one of these. Of what a received packet
# runs, only the SACK handling reads it (cwnd growth): a DATA packet is not scoped (one wrapper less each).
_SCOPED_ASYNC: Final = ("_receive_sack_chunk", "_data_channel_flush", "_transmit", "_send")
_SCOPED_SYNC: Final = ("_t3_expired",)


def install_sctp_scope(sctp: RTCSctpTransport, state: ConnectionTuning) -> None:
    for name in _SCOPED_ASYNC:
        setattr(sctp, name, _scoped_async(getattr(sctp, name), state))
    for name in _SCOPED_SYNC:
        setattr(sctp, name, _scoped_sync(getattr(sctp, name), state))


def install_coalescing(sctp: RTCSctpTransport, state: ConnectionTuning) -> None:
    """Hold the records of each SCTP transmit burst and send them in as few datagrams as fit."""
    dtls = sctp.transport
    if not isinstance(dtls, _TunedDtlsTransport) or state.datagram_limit is None:
        return
    transmit, coalescer = sctp._transmit, state.coalescer

    async def transmit_burst() -> None:
        coalescer.depth += 1
        try:
            await transmit()
        finally:
            coalescer.depth -= 1
            if not coalescer.depth:
                await dtls.flush_coalesced()

    sctp._transmit = transmit_burst  # type: ignore[method-assign]


# --- Sockets: bigger buffers and batched reads, once ICE has its sockets (local, wire-invisible) ----------


def when_connected(dtls: RTCDtlsTransport, action: Callable[[], None]) -> None:
    if dtls.state == "connected":
        action()
        return

    def on_state() -> None:
        if dtls.state == "connected":
            action()

    dtls.on("statechange", on_state)


def tune_sockets(dtls: RTCDtlsTransport, state: ConnectionTuning) -> None:
    if state.sockets_done:
        return
    state.sockets_done = True
    options = state.options
    connection = getattr(dtls.transport, "_connection", None)
    for protocol in getattr(connection, "_protocols", []):
        transport = getattr(protocol, "transport", None)
        if transport is None or transport.is_closing():
            continue
        sock = transport.get_extra_info("socket")
        if options.socket_buffer and sock is not None:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):  # keep the OS default
                    sock.setsockopt(socket.SOL_SOCKET, option, options.socket_buffer)
        install_record_split(protocol)  # before the batched reader takes the bound method
        if options.read_batch > 1:
            _batch_reads(transport, protocol, options.read_batch)


def _batch_reads(transport: Any, protocol: Any, batch: int) -> None:
    """Replace asyncio's one-datagram-per-event reader with one that drains up to ``batch``."""
    loop: Any = getattr(transport, "_loop", None)
    sock: Any = getattr(transport, "_sock", None)
    if sock is None or not hasattr(loop, "_add_reader") or not hasattr(loop, "_remove_reader"):
        return  # not a selector event loop transport: keep the stock reader
    max_size = getattr(transport, "max_size", 256 * 1024)

    def read_ready() -> None:
        for _ in range(batch):
            if transport.is_closing():
                return
            try:
                data, addr = sock.recvfrom(max_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                protocol.error_received(exc)
                return
            protocol.datagram_received(data, addr)

    fd = sock.fileno()
    loop._remove_reader(fd)
    loop._add_reader(fd, read_ready)
