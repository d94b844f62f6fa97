"""Opt-in fast path for aiortc data channels on loopback / LAN paths.

Stock aiortc sends ~1.2 KB SCTP packets, reads DTLS records into 1500-byte buffers, reads one UDP
datagram per event-loop turn and SACKs every packet; on loopback that caps a channel at a few MiB/s.
This module changes those per connection, at runtime, without touching site-packages:

- larger SCTP packets (one DTLS record each, <= 16 KiB plaintext) with matching DTLS buffers;
- a larger initial congestion window;
- bigger UDP socket buffers (no drops while the single-threaded receiver is busy);
- batched datagram reads (drain the socket on each readiness event);
- delayed SACK (one SACK per burst of up to ``sack_every`` packets, as RFC 9260 allows).

Larger packets are only safe when the peer reads large DTLS records, so both ends advertise
:func:`local_capability` in their offer/answer messages and each side applies :func:`negotiate`'s
result with :func:`apply_fast_path`. Against a stock peer only the local, wire-invisible parts apply.

Usage (the lead wires the exchange)::

    enable_fast_path("loopback")                     # once per process
    offer_msg[CAPABILITY_KEY] = local_capability()   # and likewise in the answer
    apply_fast_path(pc, negotiate(answer_msg.get(CAPABILITY_KEY)))

Both ends must read large records before either sends one: call ``apply_fast_path`` on the
answerer right after ``setRemoteDescription(offer)`` (before the answer goes out) and on the offerer
*before* ``setRemoteDescription(answer)``. If that is awkward, call ``apply_fast_path(pc, None)`` as
soon as ``pc.sctp`` exists (read side ready) and again with the negotiated profile later.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from typing import Any, Final

import attrs
from aiortc import RTCPeerConnection
from aiortc import rtcsctptransport as _sctp
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcsctptransport import RTCSctpTransport

__all__ = [
    "CAPABILITY_KEY",
    "CAPABILITY_VERSION",
    "LAN",
    "LOOPBACK",
    "PROFILES",
    "FastPathProfile",
    "active_profile",
    "apply_fast_path",
    "disable_fast_path",
    "enable_fast_path",
    "local_capability",
    "negotiate",
    "recommended_message_size",
    "user_data_size",
]

CAPABILITY_KEY: Final = "rtc_fast_path"
CAPABILITY_VERSION: Final = 1
#: Data-channel message size towards peers without the fast path (64 KiB is safe for browsers).
BROWSER_SAFE_MESSAGE: Final = 64 * 1024

# DTLS caps a record's plaintext at 2**14 bytes (RFC 6347 / 8446); one SCTP packet is one record.
DTLS_MAX_PLAINTEXT: Final = 16384
# Room for the DTLS record header, explicit nonce and AEAD tag around a full record.
_DTLS_RECORD_SLACK: Final = 256
_SCTP_OVERHEAD: Final = _sctp.SCTP_COMMON_HEADER_LENGTH + _sctp.SCTP_DATA_CHUNK_HEADER_LENGTH
_STOCK_MAX_PACKET: Final = _sctp.SCTP_MAX_PACKET_LENGTH
_STOCK_USER_DATA: Final[int] = _sctp.USERDATA_MAX_LENGTH


def user_data_size(max_packet: int) -> int:
    """User bytes per DATA chunk for an SCTP packet of ``max_packet`` bytes (4-byte aligned)."""
    return (max_packet - _SCTP_OVERHEAD) // 4 * 4


def _check_packet(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if not _STOCK_MAX_PACKET <= value <= DTLS_MAX_PLAINTEXT:
        raise ValueError(f"max_packet must be in [{_STOCK_MAX_PACKET}, {DTLS_MAX_PLAINTEXT}], got {value}")


@attrs.frozen
class FastPathProfile:
    """Knobs of the fast path; each one can be turned off on its own (for benchmarks)."""

    name: str
    max_packet: int = attrs.field(validator=_check_packet)
    """SCTP packet bytes we send when the peer agreed (stock: 1189)."""
    initial_cwnd_packets: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    """Initial congestion window, in packets of ``max_packet``."""
    socket_buffer: int = attrs.field(default=4 << 20, validator=attrs.validators.ge(0))
    """SO_RCVBUF / SO_SNDBUF for the ICE sockets (0: leave the OS default)."""
    read_batch: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    """Datagrams read per readiness event (1: stock asyncio behaviour)."""
    sack_every: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    """At most this many packets per SACK while more are queued (1: SACK every packet)."""


LOOPBACK: Final = FastPathProfile(name="loopback", max_packet=DTLS_MAX_PLAINTEXT)
# 8 KiB + headers fits a 9000-byte jumbo frame; on a 1500-MTU LAN the kernel IP-fragments it.
LAN: Final = FastPathProfile(name="lan", max_packet=8192)
PROFILES: Final[Mapping[str, FastPathProfile]] = {p.name: p for p in (LOOPBACK, LAN)}

_active: FastPathProfile | None = None


def enable_fast_path(profile: str | FastPathProfile = "loopback") -> FastPathProfile:
    """Opt this process in (idempotent); returns the active profile. Patches nothing globally."""
    global _active
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ValueError(f"unknown fast-path profile {profile!r}; known: {sorted(PROFILES)}")
        profile = PROFILES[profile]
    _active = profile
    return profile


def disable_fast_path() -> None:
    """Opt out again: later negotiations yield ``None`` (connections already tuned stay tuned)."""
    global _active
    _active = None


def active_profile() -> FastPathProfile | None:
    """The profile set by :func:`enable_fast_path`, if any."""
    return _active


def local_capability() -> dict[str, int] | None:
    """What to advertise in our offer/answer message under :data:`CAPABILITY_KEY` (None: nothing)."""
    if _active is None:
        return None
    return {"version": CAPABILITY_VERSION, "max_packet": DTLS_MAX_PLAINTEXT}


def transfer_window(profile: FastPathProfile | None) -> dict[str, int]:
    """Message size and buffered-amount window for a sender: larger on a negotiated fast path."""
    chunk = recommended_message_size(profile, limit=BROWSER_SAFE_MESSAGE if profile is None else 262144)
    if profile is None:
        return {"chunk_size": chunk}
    return {"chunk_size": chunk, "high_water": 4 * 1024 * 1024, "low_water": 1024 * 1024}


def capability_options() -> dict[str, Any]:
    """What this side puts in its offer's or answer's `options`: the capability, when the fast path is on."""
    capability = local_capability()
    return {CAPABILITY_KEY: capability} if capability else {}


def negotiate(remote: object) -> FastPathProfile | None:
    """Per-connection profile from the peer's advertised capability; ``None`` if either side lacks it.

    Never raises: a missing or malformed capability means "stock peer".
    """
    if _active is None or not isinstance(remote, Mapping):
        return None
    version, peer_max = remote.get("version"), remote.get("max_packet")
    if version != CAPABILITY_VERSION or type(peer_max) is not int or peer_max < _STOCK_MAX_PACKET:
        return None
    return attrs.evolve(_active, max_packet=min(_active.max_packet, peer_max, DTLS_MAX_PLAINTEXT))


def recommended_message_size(profile: FastPathProfile | None, limit: int = 262144) -> int:
    """Largest data-channel message <= ``limit`` that is a whole number of full DATA chunks."""
    chunk = user_data_size(profile.max_packet) if profile is not None else _STOCK_USER_DATA
    return max(chunk, limit // chunk * chunk)


# --- per-connection application ------------------------------------------------------------------


@attrs.define
class _Tuning:
    """Per-connection state, kept on the transports it tunes."""

    profile: FastPathProfile | None
    user_data: int = _STOCK_USER_DATA
    bio_read_size: int = 1500
    unsacked: int = 0
    sack_flush_pending: bool = False
    sockets_done: bool = False


_tuned: weakref.WeakKeyDictionary[Any, _Tuning] = weakref.WeakKeyDictionary()
# Strong references to fire-and-forget SACK tasks (the loop keeps only weak ones).
_background: set[asyncio.Task[None]] = set()


def apply_fast_path(pc: RTCPeerConnection, profile: FastPathProfile | None) -> None:
    """Tune ``pc``'s data-channel transports; idempotent per connection.

    ``profile`` is :func:`negotiate`'s result. With ``None`` (stock peer, or not negotiated yet) only
    wire-invisible local changes apply, and only if this process called :func:`enable_fast_path`:
    large DTLS read buffers, socket buffers and batched reads. A later call with a profile upgrades
    such a connection; anything else on an already tuned connection is a no-op. Raises
    ``ValueError`` if ``pc`` has no SCTP transport yet (call after ``createDataChannel`` or
    ``setRemoteDescription``).
    """
    local = profile if profile is not None else _active
    if local is None:
        return
    sctp = pc.sctp
    if sctp is None:
        raise ValueError("peer connection has no SCTP transport yet")
    state = _tuned.get(sctp)
    if state is None:
        state = _Tuning(profile=None)
        _tuned[sctp] = state
        dtls = sctp.transport
        _install_dtls_buffers(dtls, state)
        _when_connected(dtls, lambda: _tune_sockets(dtls, local, state))
    if profile is None or state.profile is not None:
        return
    state.profile = profile
    state.user_data = user_data_size(profile.max_packet)
    state.bio_read_size = profile.max_packet + _DTLS_RECORD_SLACK
    _install_sctp_scope(sctp, state)
    sctp._cwnd = max(sctp._cwnd, profile.initial_cwnd_packets * state.user_data)
    if profile.sack_every > 1:
        _install_delayed_sack(sctp, state, profile.sack_every)


# DTLS: aiortc calls self._ssl.recv(1500) / bio_read(1500); serve those calls from larger buffers.


class _SslProxy:
    """Wraps pyOpenSSL's ``Connection``: larger ``recv`` always, larger ``bio_read`` when agreed."""

    def __init__(self, conn: Any, state: _Tuning) -> None:
        self._conn = conn
        self._state = state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def recv(self, bufsiz: int) -> bytes:
        data: bytes = self._conn.recv(max(bufsiz, DTLS_MAX_PLAINTEXT))
        return data

    def bio_read(self, bufsiz: int) -> bytes:
        data: bytes = self._conn.bio_read(max(bufsiz, self._state.bio_read_size))
        return data


def _get_ssl(self: Any) -> Any:
    return self.__dict__.get("_fsm_ssl")


def _set_ssl(self: Any, conn: Any) -> None:
    wrap = conn is not None and not isinstance(conn, _SslProxy)
    self.__dict__["_fsm_ssl"] = _SslProxy(conn, _tuned[self]) if wrap else conn


class _TunedDtlsTransport(RTCDtlsTransport):  # type: ignore[misc]
    """Same transport, with ``_ssl`` routed through :class:`_SslProxy` (swapped in per instance)."""

    _ssl = property(_get_ssl, _set_ssl)


def _install_dtls_buffers(dtls: RTCDtlsTransport, state: _Tuning) -> None:
    if type(dtls) is not RTCDtlsTransport:
        return  # already tuned, or a subclass we do not know
    _tuned[dtls] = state
    current = dtls.__dict__.pop("_ssl", None)
    dtls.__class__ = _TunedDtlsTransport
    dtls._ssl = current


# SCTP: aiortc reads the chunk size from the module constant USERDATA_MAX_LENGTH (fragmenting,
# burst limit, cwnd steps). Set it to this connection's value around every step of its coroutines,
# so other connections in the process keep the stock value.


class _ScopedUserData:
    """Awaitable running ``coro`` with ``USERDATA_MAX_LENGTH`` set to ``value`` during each step."""

    __slots__ = ("_coro", "_value")

    def __init__(self, coro: Coroutine[Any, Any, Any], value: int) -> None:
        self._coro = coro
        self._value = value

    def __await__(self) -> Generator[Any, Any, Any]:
        inner = self._coro.__await__()
        sent: Any = None
        error: BaseException | None = None
        while True:
            saved = _sctp.USERDATA_MAX_LENGTH
            _sctp.USERDATA_MAX_LENGTH = self._value
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
    method: Callable[..., Coroutine[Any, Any, Any]], state: _Tuning
) -> Callable[..., Awaitable[Any]]:
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await _ScopedUserData(method(*args, **kwargs), state.user_data)

    return run


def _scoped_sync(method: Callable[..., Any], state: _Tuning) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        saved = _sctp.USERDATA_MAX_LENGTH
        _sctp.USERDATA_MAX_LENGTH = state.user_data
        try:
            return method(*args, **kwargs)
        finally:
            _sctp.USERDATA_MAX_LENGTH = saved

    return run


# Every path into code that reads USERDATA_MAX_LENGTH starts at one of these.
_SCOPED_ASYNC: Final = ("_handle_data", "_data_channel_flush", "_transmit", "_send")
_SCOPED_SYNC: Final = ("_t3_expired",)


def _install_sctp_scope(sctp: RTCSctpTransport, state: _Tuning) -> None:
    for name in _SCOPED_ASYNC:
        setattr(sctp, name, _scoped_async(getattr(sctp, name), state))
    for name in _SCOPED_SYNC:
        setattr(sctp, name, _scoped_sync(getattr(sctp, name), state))


# Delayed SACK: skip the SACK while more datagrams wait in the ICE receive queue (they are handled
# in the same task step), but never more than ``every`` packets in a row.


def _pending_datagrams(sctp: RTCSctpTransport) -> int:
    queue = getattr(getattr(sctp.transport.transport, "_connection", None), "_queue", None)
    return queue.qsize() if isinstance(queue, asyncio.Queue) else 0


def _install_delayed_sack(sctp: RTCSctpTransport, state: _Tuning, every: int) -> None:
    send_sack = sctp._send_sack

    def flush() -> None:
        state.sack_flush_pending = False
        if sctp._sack_needed:
            state.unsacked = 0
            task = asyncio.ensure_future(send_sack())
            _background.add(task)
            task.add_done_callback(_background.discard)

    async def delayed_send_sack() -> None:
        state.unsacked += 1
        if state.unsacked < every and _pending_datagrams(sctp) > 0:
            if not state.sack_flush_pending:  # safety net if no further SCTP packet follows
                state.sack_flush_pending = True
                asyncio.get_running_loop().call_soon(flush)
            return
        state.unsacked = 0
        await send_sack()

    sctp._send_sack = delayed_send_sack  # type: ignore[method-assign]


# Sockets: bigger buffers and batched reads, once ICE has its sockets (local, wire-invisible).


def _when_connected(dtls: RTCDtlsTransport, action: Callable[[], None]) -> None:
    if dtls.state == "connected":
        action()
        return

    def on_state() -> None:
        if dtls.state == "connected":
            action()

    dtls.on("statechange", on_state)


def _tune_sockets(dtls: RTCDtlsTransport, profile: FastPathProfile, state: _Tuning) -> None:
    if state.sockets_done:
        return
    state.sockets_done = True
    connection = getattr(dtls.transport, "_connection", None)
    for protocol in getattr(connection, "_protocols", []):
        transport = getattr(protocol, "transport", None)
        if transport is None or transport.is_closing():
            continue
        sock = transport.get_extra_info("socket")
        if profile.socket_buffer and sock is not None:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):  # keep the OS default
                    sock.setsockopt(socket.SOL_SOCKET, option, profile.socket_buffer)
        if profile.read_batch > 1:
            _batch_reads(transport, protocol, profile.read_batch)


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
