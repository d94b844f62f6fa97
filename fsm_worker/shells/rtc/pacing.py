"""SCTP pacing with a capable peer: delayed SACKs and transmits longer than aiortc's 4-packet burst.

Both are wire-visible and so applied only after both ends advertised the capability
(``fsm_worker.shells.rtc.tuning.apply_fast_path``). Per connection instance; nothing global.
"""

from __future__ import annotations

import asyncio

from aiortc import rtcsctptransport as _sctp
from aiortc.rtcsctptransport import RTCSctpTransport

from fsm_worker.shells.rtc.aiortc_hooks import ConnectionTuning, spawn


def install_longer_bursts(sctp: RTCSctpTransport, packets: int) -> None:
    """Let one transmit send up to ``packets`` new DATA packets (aiortc: 4, RFC 9260's Max.Burst).

    With delayed SACKs one acknowledgement frees more than 4 packets of window; at 4 per SACK the flight
    would shrink. Outside fast recovery only; the congestion window still bounds the flight.
    """
    per_call = _sctp.SCTP_MAX_BURST
    if packets <= per_call:
        return
    transmit = sctp._transmit

    async def transmit_more() -> None:
        await transmit()
        budget = packets - per_call
        while (
            budget > 0
            and sctp._outbound_queue
            and sctp._flight_size < sctp._cwnd
            and sctp._fast_recovery_exit is None
        ):
            before = len(sctp._outbound_queue)
            await transmit()
            if len(sctp._outbound_queue) >= before:
                return
            budget -= per_call

    sctp._transmit = transmit_more  # type: ignore[method-assign]


# Delayed SACK: skip the SACK while more datagrams wait in the ICE receive queue (they are handled in the
# same task step), but never more than ``every`` packets in a row.


def _pending_datagrams(sctp: RTCSctpTransport) -> int:
    queue = getattr(getattr(sctp.transport.transport, "_connection", None), "_queue", None)
    return queue.qsize() if isinstance(queue, asyncio.Queue) else 0


def install_delayed_sack(sctp: RTCSctpTransport, state: ConnectionTuning, every: int) -> None:
    send_sack = sctp._send_sack

    def flush() -> None:
        state.sack_flush_pending = False
        if sctp._sack_needed:
            state.unsacked = 0
            spawn(send_sack())

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
