"""Fast data channels by default: the capability exchange and the per-connection tuning.

Stock aiortc sends ~1.2 KB SCTP packets, reads DTLS records into 1500-byte buffers, reads one UDP
datagram per event-loop turn and SACKs every packet. Per connection, at runtime, this module:

- always (invisible on the wire): reads large DTLS records, enlarges the UDP socket buffers, drains the
  socket in batches;
- when the peer advertised :func:`local_capability` too: probes the path for the largest SCTP packet it
  carries and uses it (``fsm_worker.shells.rtc.probing``), falls back on a black hole, and delays SACKs
  (one per burst of up to ``sack_every`` packets, as RFC 9260 allows) with a larger initial window.

Usage (the host and client do this)::

    pc = create_peer_connection(options)                 # RtcOptions
    offer_msg.options |= capability_options(options)     # and likewise in the answer
    apply_fast_path(pc, negotiate(options, answer_msg.options.get(CAPABILITY_KEY)))

Both ends must read large records before either sends one: call ``apply_fast_path`` on the answerer right
after ``setRemoteDescription(offer)`` (before the answer goes out) and on the offerer *before*
``setRemoteDescription(answer)``. ICE (and so DTLS) cannot start earlier than that.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, Final

from aiortc import RTCPeerConnection

from fsm_worker.shells.rtc.aiortc_hooks import (
    STOCK_USER_DATA,
    ConnectionTuning,
    enable_large_records,
    install_coalescing,
    install_dtls_buffers,
    install_sctp_scope,
    tiled_packet_size,
    tune_sockets,
    tuned,
    user_data_size,
    when_connected,
)
from fsm_worker.shells.rtc.fastsend import FusedSender, install_fused_transmit
from fsm_worker.shells.rtc.options import DTLS_MAX_PLAINTEXT, MAX_DATAGRAM, STOCK_MAX_PACKET, RtcOptions
from fsm_worker.shells.rtc.pacing import install_delayed_sack, install_longer_bursts
from fsm_worker.shells.rtc.packets import install_packet_codec
from fsm_worker.shells.rtc.peer import options_of
from fsm_worker.shells.rtc.probing import PathProber, install_prober, split_packet

__all__ = [
    "BROWSER_SAFE_MESSAGE",
    "CAPABILITY_KEY",
    "CAPABILITY_VERSION",
    "DTLS_MAX_PLAINTEXT",
    "Agreement",
    "PathReport",
    "apply_fast_path",
    "capability_options",
    "local_capability",
    "negotiate",
    "path_report",
    "recommended_message_size",
    "transfer_window",
    "user_data_size",
]

CAPABILITY_KEY: Final = "rtc_fast_path"
#: 2: reads records up to ``max_packet``, answers padded probes, reassembles split packets.
CAPABILITY_VERSION: Final = 2
#: Data-channel message size towards peers without the capability (64 KiB is safe for browsers).
BROWSER_SAFE_MESSAGE: Final = 64 * 1024


class Agreement(int):
    """:func:`negotiate`'s result: the largest packet both ends read (an ``int``), and ``datagram``: the
    largest datagram of coalesced records both ends split (None: one record per datagram)."""

    datagram: int | None

    def __new__(cls, max_packet: int, datagram: int | None = None) -> Agreement:
        agreement = super().__new__(cls, max_packet)
        agreement.datagram = datagram
        return agreement


def local_capability(options: RtcOptions) -> dict[str, int] | None:
    """What to advertise under :data:`CAPABILITY_KEY` (None with the "stock" packet-size policy).

    ``datagram`` (optional; older peers neither send nor read it): I split UDP datagrams of up to this many
    bytes made of several DTLS records, and may send such datagrams to a peer that said the same.
    """
    if options.packet_size == "stock":
        return None
    capability = {"version": CAPABILITY_VERSION, "max_packet": options.max_packet}
    if options.max_datagram:
        capability["datagram"] = options.max_datagram
    return capability


def capability_options(options: RtcOptions) -> dict[str, Any]:
    """What this side puts in its offer's or answer's ``options``."""
    capability = local_capability(options)
    return {CAPABILITY_KEY: capability} if capability else {}


def negotiate(options: RtcOptions, remote: object) -> Agreement | None:
    """The largest packet both ends read, from the peer's advertised capability; None: stock peer.

    Never raises: a missing or malformed capability means "stock peer"; a missing or malformed
    ``datagram`` means one record per datagram.
    """
    if options.packet_size == "stock" or not isinstance(remote, Mapping):
        return None
    version, peer_max = remote.get("version"), remote.get("max_packet")
    if version != CAPABILITY_VERSION or type(peer_max) is not int or peer_max < STOCK_MAX_PACKET:
        return None
    peer_datagram = remote.get("datagram")
    datagram = None
    if options.max_datagram and type(peer_datagram) is int and peer_datagram >= 2 * STOCK_MAX_PACKET:
        datagram = min(options.max_datagram, peer_datagram, MAX_DATAGRAM)
    return Agreement(min(options.max_packet, peer_max, DTLS_MAX_PLAINTEXT), datagram)


def transfer_window(agreed: int | None) -> dict[str, int]:
    """Message size and buffered-amount window for a sender: larger with a capable peer."""
    if agreed is None:
        return {"chunk_size": recommended_message_size(None, BROWSER_SAFE_MESSAGE)}
    # A whole number of full DATA chunks at the expected packet size: no short packet per message.
    packet = tiled_packet_size(min(agreed, DTLS_MAX_PLAINTEXT), getattr(agreed, "datagram", None))
    return {
        "chunk_size": recommended_message_size(packet),
        "high_water": 4 * 1024 * 1024,
        "low_water": 1024 * 1024,
    }


def recommended_message_size(max_packet: int | None, limit: int = 262144) -> int:
    """Largest data-channel message <= ``limit`` that is a whole number of full DATA chunks."""
    chunk = user_data_size(max_packet) if max_packet is not None else STOCK_USER_DATA
    return max(chunk, limit // chunk * chunk)


def apply_fast_path(pc: RTCPeerConnection, agreed: int | None) -> None:
    """Tune ``pc``'s data-channel transports with its own options; idempotent per connection.

    ``agreed`` is :func:`negotiate`'s result. With None (stock peer, or not negotiated yet) only the
    wire-invisible local changes apply. A later call with a value upgrades such a connection; anything
    else on an already upgraded connection is a no-op. Raises ``ValueError`` if ``pc`` has no SCTP
    transport yet (call after ``createDataChannel`` or ``setRemoteDescription``).
    """
    sctp = pc.sctp
    if sctp is None:
        raise ValueError("peer connection has no SCTP transport yet")
    state = tuned.get(sctp)
    if state is None:
        state = ConnectionTuning(options_of(pc))
        tuned[sctp] = state
        dtls = sctp.transport
        install_dtls_buffers(dtls, state)
        when_connected(dtls, lambda: tune_sockets(dtls, state))
    if agreed is None or state.agreed is not None:
        return
    state.agreed = agreed
    dtls = sctp.transport
    ids = itertools.count(1)
    enable_large_records(dtls, state, lambda data, limit: split_packet(next(ids), data, limit))
    install_packet_codec(sctp)  # below the prober's hooks
    state.datagram_limit = getattr(agreed, "datagram", None)
    install_fused_transmit(sctp, state)  # the innermost transmit: below the prober's hooks too
    prober = install_prober(sctp, state, getattr(dtls, "send_unsplit", dtls._send_data))
    install_longer_bursts(sctp, state.options.burst_packets)
    if prober is not None and state.datagram_limit is not None:
        state.coalesce_from = prober.core.settings.candidates[0]
        install_coalescing(sctp, state)
    install_sctp_scope(sctp, state)
    sctp._cwnd = max(sctp._cwnd, state.options.initial_cwnd_packets * STOCK_USER_DATA)
    if state.options.sack_every > 1:
        install_delayed_sack(sctp, state, state.options.sack_every)


# --- what happened on a connection (tests, benchmarks, logs) -------------------------------------------


class PathReport:
    """A snapshot of one connection's packet-size state and what it sent."""

    def __init__(self, state: ConnectionTuning) -> None:
        prober: PathProber | None = state.prober
        self.agreed = state.agreed
        self.packet_size = state.packet_size
        self.datagrams_sent = state.datagrams_sent
        self.bytes_sent = state.bytes_sent
        self.largest_datagram = state.largest_datagram
        self.split_packets = state.split_packets
        self.coalesced_records = state.coalescer.records
        """Records sent in datagrams shared with others (and how many such datagrams)."""
        self.coalesced_datagrams = state.coalescer.datagrams
        sender: FusedSender | None = state.sender
        self.fused_records = sender.records if sender else 0
        """DATA chunks sent by the fused send path (``fastsend``)."""
        self.probes_sent = prober.probes_sent if prober else 0
        self.probes_acked = prober.probes_acked if prober else 0
        self.fallbacks = prober.fallbacks if prober else 0
        self.sizes = [d.size for d in prober.history] if prober else []
        self.changed_at = list(prober.changed_at) if prober else []

    def __repr__(self) -> str:
        return f"PathReport({vars(self)})"


def path_report(pc: RTCPeerConnection) -> PathReport | None:
    """What ``pc``'s tuning did so far (None: the connection was never tuned)."""
    state = tuned.get(pc.sctp) if pc.sctp is not None else None
    return PathReport(state) if state is not None else None
