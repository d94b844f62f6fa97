"""Per-connection WebRTC options: one value handed to the peer-connection factory, never a module global."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import attrs

from fsm_worker.protocol.rtc.packet_size import SearchSettings
from fsm_worker.shells.rtc.config import IceServerConfig

__all__ = [
    "DTLS_MAX_PLAINTEXT",
    "LOOPBACK_MODES",
    "MAX_DATAGRAM",
    "PACKET_SIZE_POLICIES",
    "STOCK_MAX_PACKET",
    "RtcOptions",
]

#: DTLS caps a record's plaintext at 2**14 bytes (RFC 6347 / 8446); one SCTP packet is one record.
DTLS_MAX_PLAINTEXT: Final = 16384
#: aiortc's own SCTP packet size (``rtcsctptransport.SCTP_MAX_PACKET_LENGTH``), what browsers get too.
STOCK_MAX_PACKET: Final = 1189
#: "off": aioice's own host addresses; "add": plus 127.0.0.1; "only": 127.0.0.1 alone (tests, the demo).
LOOPBACK_MODES: Final = ("off", "add", "only")
#: "auto": probe the path for larger packets when the peer can read them; "stock": never send larger packets.
PACKET_SIZE_POLICIES: Final = ("auto", "stock")
#: Legacy spellings of ``rtc_fast_path`` settings, mapped to a packet-size policy.
_FAST_PATH_SETTINGS: Final = {
    None: "auto",
    "auto": "auto",
    "on": "auto",
    "loopback": "auto",
    "lan": "auto",
    "off": "stock",
    "stock": "stock",
}


#: Largest UDP payload over IPv4: the most records one coalesced datagram may carry.
MAX_DATAGRAM: Final = 65507


def _check_max_datagram(_options: object, _attr: object, value: int) -> None:
    if type(value) is not int or not (value == 0 or 2 * STOCK_MAX_PACKET <= value <= MAX_DATAGRAM):
        raise ValueError(
            f"RtcOptions.max_datagram must be 0 (off) or {2 * STOCK_MAX_PACKET}..{MAX_DATAGRAM}, got {value!r}"
        )


def _ice_servers(value: Iterable[IceServerConfig]) -> tuple[IceServerConfig, ...]:
    return tuple(value)


@attrs.frozen
class RtcOptions:
    """Everything one peer connection is set up with; the defaults are fast and safe on any path.

    Wire-visible changes (packet size, delayed SACK, initial window) apply only after both ends advertised
    the capability; everything else is local and applies to every connection built with these options.
    """

    ice_servers: tuple[IceServerConfig, ...] = attrs.field(default=(), converter=_ice_servers)
    loopback: str = attrs.field(default="add", validator=attrs.validators.in_(LOOPBACK_MODES))
    """Whether 127.0.0.1 is a host ICE candidate (see :data:`LOOPBACK_MODES`)."""
    packet_size: str = attrs.field(default="auto", validator=attrs.validators.in_(PACKET_SIZE_POLICIES))
    """Packet-size policy (see :data:`PACKET_SIZE_POLICIES`)."""
    max_packet: int = attrs.field(
        default=DTLS_MAX_PLAINTEXT,
        validator=[attrs.validators.ge(STOCK_MAX_PACKET), attrs.validators.le(DTLS_MAX_PLAINTEXT)],
    )
    """Largest SCTP packet this end reads and advertises (at most one DTLS record)."""
    search: SearchSettings = attrs.field(factory=SearchSettings)
    """How the sender probes its path (sizes, timeouts, re-probe interval)."""
    socket_buffer: int = attrs.field(default=4 << 20, validator=attrs.validators.ge(0))
    """SO_RCVBUF / SO_SNDBUF for the ICE sockets (0: the OS default)."""
    read_batch: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    """Datagrams read per readiness event (1: stock asyncio behaviour)."""
    sack_every: int = attrs.field(default=16, validator=attrs.validators.ge(1))
    """At most this many packets per SACK while more are queued, with a capable peer (1: SACK every packet)."""
    initial_cwnd_packets: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    """Initial congestion window in stock-size packets, with a capable peer (aiortc: 3)."""
    burst_packets: int = attrs.field(default=32, validator=[attrs.validators.ge(4), attrs.validators.le(64)])
    """At most this many new DATA packets per transmit, with a capable peer (aiortc, RFC 9260: 4)."""
    max_datagram: int = attrs.field(default=MAX_DATAGRAM, validator=_check_max_datagram)
    """Largest UDP datagram of several DTLS records this end splits and sends, with a capable peer (0: off)."""

    @classmethod
    def from_settings(
        cls,
        ice_servers: Iterable[IceServerConfig] = (),
        *,
        loopback_only: bool = False,
        fast_path: str | None = None,
    ) -> RtcOptions:
        """Options from the host's / client's settings (``loopback_only``, ``rtc_fast_path``).

        ``fast_path`` None / "auto" (the default) probes; "off" / "stock" keeps stock packets; the older
        "loopback" / "lan" profiles mean "auto" now. Anything else raises ``ValueError`` naming the setting.
        """
        if fast_path not in _FAST_PATH_SETTINGS:
            known = ", ".join(str(k) for k in _FAST_PATH_SETTINGS if k is not None)
            raise ValueError(f"rtc_fast_path must be one of {known}, got {fast_path!r}")
        return cls(
            ice_servers=ice_servers,
            loopback="only" if loopback_only else "add",
            packet_size=_FAST_PATH_SETTINGS[fast_path],
        )
