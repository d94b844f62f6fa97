"""The fused send path hands every unusual case to aiortc's own ``_transmit`` (one layer, no sockets).

That it runs, and sends the same bytes, on real peers is checked in ``test_path_probing.py`` (``fused_records``
with a byte-exact transfer on a 1500-MTU path, none towards a stock peer or one that does not split).
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcsctptransport import DataChunk

from fsm_worker.shells.rtc.aiortc_hooks import ConnectionTuning
from fsm_worker.shells.rtc.fastsend import FusedSender, install_fused_transmit
from fsm_worker.shells.rtc.options import RtcOptions


def _parts(**changes: Any) -> tuple[FusedSender, list[str]]:
    calls: list[str] = []

    async def fallback() -> None:
        calls.append("aiortc")

    chunk = DataChunk()
    chunk._retransmit = changes.pop("retransmit", False)
    dtls = SimpleNamespace(
        _state=changes.pop("dtls_state", DtlsState.CONNECTED), flush_coalesced=None, _ssl=None
    )
    sctp = SimpleNamespace(
        transport=dtls,
        _forward_tsn_chunk=changes.pop("forward_tsn", None),
        _fast_recovery_exit=changes.pop("fast_recovery", None),
        _sent_queue=deque([chunk]),
        _outbound_queue=deque(),
        _flight_size=0,
        _cwnd=65536,
        _local_port=5000,
        _remote_port=5000,
        _remote_verification_tag=1,
    )
    state = ConnectionTuning(RtcOptions())
    state.datagram_limit, state.coalesce_from = 65507, 16384
    state.use_packet_size(changes.pop("packet_size", 16384))
    state.coalescer.depth = changes.pop("depth", 1)
    assert not changes
    return FusedSender(sctp, state, fallback), calls


@pytest.mark.parametrize(
    "case",
    [
        {"retransmit": True},
        {"forward_tsn": object()},
        {"fast_recovery": 7},
        {"dtls_state": DtlsState.CLOSED},
        {"packet_size": 1200},  # fell back from the probed size: records are not coalesced
        {"depth": 0},  # not inside a coalesced burst
    ],
)
def test_unusual_cases_run_aiortcs_transmit(case: dict[str, Any]) -> None:
    sender, calls = _parts(**case)
    asyncio.run(sender.transmit())
    assert calls == ["aiortc"] and sender.fallbacks == 1 and sender.records == 0


def test_common_case_is_fused() -> None:
    sender, calls = _parts()
    asyncio.run(sender.transmit())  # nothing queued: the fused loop runs and sends nothing
    assert calls == [] and sender.fallbacks == 0


def test_not_installed_without_coalescing() -> None:
    state = ConnectionTuning(RtcOptions())  # the peer does not split datagrams
    sctp = SimpleNamespace(_transmit=None)
    assert install_fused_transmit(sctp, state) is None and sctp._transmit is None and state.sender is None
