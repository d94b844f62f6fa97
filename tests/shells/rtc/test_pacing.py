"""Longer SCTP bursts with a capable peer: one transmit may send up to ``burst_packets`` (no network)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from fsm_worker.shells.rtc.pacing import install_longer_bursts


class FakeSctp:
    """aiortc's shape: ``_transmit`` sends at most 4 queued chunks within the congestion window."""

    def __init__(self, queued: int, cwnd: int, fast_recovery: bool = False) -> None:
        self._outbound_queue: deque[int] = deque(range(queued))
        self._flight_size = 0
        self._cwnd = cwnd
        self._fast_recovery_exit: Any = 1 if fast_recovery else None
        self.sent: list[int] = []
        self.calls = 0

    async def _transmit(self) -> None:
        self.calls += 1
        for _ in range(4):
            if not self._outbound_queue or self._flight_size >= self._cwnd:
                return
            self.sent.append(self._outbound_queue.popleft())
            self._flight_size += 1


def transmit_once(sctp: FakeSctp, packets: int) -> None:
    install_longer_bursts(sctp, packets)  # type: ignore[arg-type]
    asyncio.run(sctp._transmit())


def test_one_transmit_sends_up_to_the_burst_in_order() -> None:
    sctp = FakeSctp(queued=100, cwnd=1000)
    transmit_once(sctp, 32)
    assert sctp.sent == list(range(32)) and len(sctp._outbound_queue) == 68


def test_the_congestion_window_still_bounds_the_flight() -> None:
    sctp = FakeSctp(queued=100, cwnd=10)
    transmit_once(sctp, 32)
    assert sctp.sent == list(range(10))


def test_fast_recovery_keeps_aiortcs_burst() -> None:
    sctp = FakeSctp(queued=100, cwnd=1000, fast_recovery=True)
    transmit_once(sctp, 32)
    assert sctp.sent == list(range(4)) and sctp.calls == 1


def test_an_empty_queue_ends_the_burst() -> None:
    sctp = FakeSctp(queued=2, cwnd=1000)
    transmit_once(sctp, 32)
    assert sctp.sent == [0, 1] and sctp.calls == 1


def test_a_transmit_that_sends_nothing_ends_the_burst() -> None:
    sctp = FakeSctp(queued=100, cwnd=1000)
    calls = 0

    async def stuck() -> None:  # e.g. aiortc retransmitting first, or refusing for its own reasons
        nonlocal calls
        calls += 1

    sctp._transmit = stuck  # type: ignore[method-assign]
    transmit_once(sctp, 32)
    assert calls == 2 and not sctp.sent


def test_burst_of_four_is_aiortcs_own() -> None:
    sctp = FakeSctp(queued=100, cwnd=1000)
    original = sctp._transmit
    install_longer_bursts(sctp, 4)  # type: ignore[arg-type]
    assert sctp._transmit == original  # not wrapped
