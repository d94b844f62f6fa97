"""The packet-size search core: exact decisions for each situation, time as a parameter."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsm_worker.protocol.rtc.packet_size import (
    Begin,
    DataAcked,
    DataInFlight,
    Decision,
    PacketSizeSearch,
    ProbeAcked,
    Retransmit,
    SearchSettings,
    SendProbe,
    TimerFired,
    UsePacketSize,
)

S = SearchSettings()


def _probes(out: list[Decision]) -> dict[int, int]:
    return {d.size: d.probe_id for d in out if isinstance(d, SendProbe)}


def test_begin_probes_every_candidate_largest_first_once() -> None:
    core = PacketSizeSearch()
    out = core.handle(Begin(), 0.0)
    assert [d.size for d in out if isinstance(d, SendProbe)] == list(S.candidates)
    assert core.size == S.base
    assert core.next_deadline() == S.probe_timeout
    assert core.handle(Begin(), 0.1) == []  # idempotent


def test_largest_acknowledged_wins_at_once() -> None:
    core = PacketSizeSearch()
    ids = _probes(core.handle(Begin(), 0.0))
    assert core.handle(ProbeAcked(ids[16384]), 0.01) == [UsePacketSize(16384, "probe acknowledged")]
    assert core.size == 16384
    assert not core.searching
    assert core.next_deadline() is None  # at the largest candidate, idle: no timer


def test_smaller_ack_waits_for_larger_then_timeout_picks_largest_acked() -> None:
    core = PacketSizeSearch()
    ids = _probes(core.handle(Begin(), 0.0))
    assert core.handle(ProbeAcked(ids[1400]), 0.01) == []
    assert core.handle(ProbeAcked(ids[4096]), 0.02) == []
    assert core.handle(TimerFired(), 0.1) == []  # before the deadline: nothing
    assert core.handle(TimerFired(), S.probe_timeout) == [UsePacketSize(4096, "probe acknowledged")]
    assert core.size == 4096
    assert core.next_deadline() == S.probe_timeout + S.reprobe_interval


def test_no_probe_acknowledged_keeps_base_and_reprobes_later() -> None:
    core = PacketSizeSearch()
    core.handle(Begin(), 0.0)
    assert core.handle(TimerFired(), S.probe_timeout) == []
    assert core.size == S.base
    again = core.handle(TimerFired(), S.probe_timeout + S.reprobe_interval)
    assert [d.size for d in again if isinstance(d, SendProbe)] == list(S.candidates)


def test_reprobe_only_searches_upward_and_ignores_stale_acks() -> None:
    core = PacketSizeSearch()
    first = _probes(core.handle(Begin(), 0.0))
    core.handle(ProbeAcked(first[1400]), 0.01)
    core.handle(TimerFired(), S.probe_timeout)
    assert core.size == 1400
    second = _probes(core.handle(TimerFired(), S.probe_timeout + S.reprobe_interval))
    assert sorted(second) == [4096, 8192, 16384]
    assert core.handle(ProbeAcked(first[16384]), 31.0) == []  # the first round's probe: stale
    assert core.handle(ProbeAcked(second[8192]), 31.0) == []
    assert core.handle(ProbeAcked(second[16384]), 31.0) == [UsePacketSize(16384, "probe acknowledged")]


def _settled_large(now: float = 0.0) -> PacketSizeSearch:
    core = PacketSizeSearch()
    ids = _probes(core.handle(Begin(), now))
    core.handle(ProbeAcked(ids[16384]), now)
    return core


def test_stall_on_large_packets_falls_back_at_once_retransmits_and_searches() -> None:
    core = _settled_large()
    core.handle(DataInFlight(), 1.0)
    core.handle(DataAcked(in_flight=True, rtt=0.001), 1.1)
    assert core.next_deadline() == pytest.approx(1.1 + S.stall_timeout)
    assert core.handle(TimerFired(), 1.2) == []
    out = core.handle(TimerFired(), 1.1 + S.stall_timeout)
    assert out[:2] == [UsePacketSize(S.base, "black hole: data in flight, no acknowledgement"), Retransmit()]
    assert [d.size for d in out[2:] if isinstance(d, SendProbe)] == list(S.candidates)
    assert core.size == S.base
    assert core.next_deadline() == pytest.approx(1.1 + S.stall_timeout + S.probe_timeout)


def test_no_stall_detection_when_idle_or_at_base() -> None:
    core = _settled_large()
    core.handle(DataInFlight(), 1.0)
    core.handle(DataAcked(in_flight=False), 1.05)
    assert core.next_deadline() is None
    assert core.handle(TimerFired(), 100.0) == []
    base = PacketSizeSearch()
    base.handle(Begin(), 0.0)
    base.handle(TimerFired(), 1.0)  # nothing acknowledged: stays at base
    base.handle(DataInFlight(), 2.0)
    assert base.next_deadline() == 1.0 + S.reprobe_interval  # only the re-probe, never a stall


def test_timeouts_scale_with_round_trip() -> None:
    core = _settled_large()
    core.handle(DataAcked(in_flight=True, rtt=0.5), 2.0)
    assert core.next_deadline() == pytest.approx(2.0 + 4 * 0.5)


def test_settings_refuse_bad_values_naming_them() -> None:
    with pytest.raises(ValueError, match="candidates"):
        SearchSettings(candidates=(4096, 8192))
    with pytest.raises(ValueError, match="exceed base"):
        SearchSettings(candidates=(8192, 1000))
    with pytest.raises(ValueError, match="probe_timeout"):
        SearchSettings(probe_timeout=0)


EVENTS = st.one_of(
    st.just(Begin()),
    st.builds(ProbeAcked, st.integers(0, 12)),
    st.just(DataInFlight()),
    st.builds(DataAcked, st.booleans(), st.one_of(st.none(), st.floats(0.0001, 2.0))),
    st.just(TimerFired()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(EVENTS, st.floats(0, 5.0)), max_size=60))
def test_total_and_safe_for_any_event_sequence(steps: list[tuple[object, float]]) -> None:
    """Never raises; the size is base or a candidate and only grows through an acknowledged probe."""
    core = PacketSizeSearch()
    now = 0.0
    sent: dict[int, int] = {}
    acked: set[int] = set()
    for event, dt in steps:
        now += dt
        if isinstance(event, ProbeAcked) and event.probe_id in sent:
            acked.add(sent[event.probe_id])
        before = core.size
        out = core.handle(event, now)  # type: ignore[arg-type]
        for decision in out:
            if isinstance(decision, SendProbe):
                assert decision.size > S.base
                sent[decision.probe_id] = decision.size
            if isinstance(decision, UsePacketSize):
                assert decision.size == S.base or decision.size in acked
        assert core.size == S.base or core.size in S.candidates
        assert core.size <= before or core.size in acked
        deadline = core.next_deadline()
        if isinstance(event, TimerFired):  # a fired timer never leaves an overdue deadline behind
            assert deadline is None or deadline > now


def test_a_late_ack_of_the_last_round_still_raises_the_size() -> None:
    """A busy peer answers after the timeout: the path did carry the probe, so the size is used then."""
    core = PacketSizeSearch()
    ids = _probes(core.handle(Begin(), 0.0))
    core.handle(ProbeAcked(ids[1400]), 0.1)
    assert core.handle(TimerFired(), S.probe_timeout) == [UsePacketSize(1400, "probe acknowledged")]
    assert core.handle(ProbeAcked(ids[8192]), 0.6) == [UsePacketSize(8192, "late probe acknowledged")]
    assert core.handle(ProbeAcked(ids[4096]), 0.7) == []  # smaller than what is in use: nothing
    assert core.handle(ProbeAcked(ids[16384]), 0.8) == [UsePacketSize(16384, "late probe acknowledged")]
    assert core.next_deadline() is None


def test_late_acks_from_before_a_black_hole_do_not_count() -> None:
    core = PacketSizeSearch()
    ids = _probes(core.handle(Begin(), 0.0))
    core.handle(ProbeAcked(ids[4096]), 0.1)
    core.handle(TimerFired(), S.probe_timeout)
    core.handle(DataInFlight(), 1.0)
    out = core.handle(TimerFired(), 1.0 + S.stall_timeout)
    assert Retransmit() in out and core.size == S.base
    assert core.handle(ProbeAcked(ids[16384]), 1.3) == []  # evidence from before the path changed
