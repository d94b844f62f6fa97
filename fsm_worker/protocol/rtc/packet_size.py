"""Which SCTP packet size a data channel's sender may use on its path: a pure decision core.

In the spirit of RFC 8899 (packetization-layer path MTU discovery): the sender starts at the stock size
(``base``), sends one padded probe packet per candidate size, and moves to the largest size the peer
acknowledged. Probes are not data: losing one loses nothing. While larger packets are in use, a stall
(data in flight, no acknowledgement for ``stall_timeout``) is treated as a black hole: the size drops at
once to ``base``, everything in flight is sent again, and a new search starts. A size below the largest
candidate is re-probed every ``reprobe_interval``.

Events in, decisions out, time as a parameter (``handle(event, now)``, ``next_deadline()``); the shell
(``fsm_worker.shells.rtc.probing``) sends the probes, changes the packet size and fires the timer.
"""

from __future__ import annotations

import attrs

__all__ = [
    "Begin",
    "DataAcked",
    "DataInFlight",
    "PacketSizeSearch",
    "ProbeAcked",
    "Retransmit",
    "SearchSettings",
    "SendProbe",
    "TimerFired",
    "UsePacketSize",
]


def _check_candidates(settings: SearchSettings, _attr: object, value: tuple[int, ...]) -> None:
    if not value or list(value) != sorted(set(value), reverse=True):
        raise ValueError(f"SearchSettings.candidates must be distinct and descending, got {value}")
    if value[-1] <= settings.base:
        raise ValueError(f"SearchSettings.candidates must all exceed base {settings.base}, got {value}")


@attrs.frozen
class SearchSettings:
    """The search's limits; every one has a default (times in seconds)."""

    base: int = attrs.field(default=1189, validator=attrs.validators.ge(576))
    """The size that always works (stock aiortc's packet)."""
    candidates: tuple[int, ...] = attrs.field(default=(16384, 8192, 4096, 1400), validator=_check_candidates)
    """Sizes probed, largest first."""
    probe_timeout: float = attrs.field(default=0.25, validator=attrs.validators.gt(0))
    """How long a probe may take to be acknowledged (at least; see ``rtt_factor``)."""
    stall_timeout: float = attrs.field(default=0.25, validator=attrs.validators.gt(0))
    """Data in flight with no acknowledgement for this long, on a size above ``base``: a black hole."""
    reprobe_interval: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    """How often a size below the largest candidate is probed again."""
    rtt_factor: float = attrs.field(default=4.0, validator=attrs.validators.ge(1))
    """Timeouts are at least this many smoothed round trips."""


# --- events (from the shell) ----------------------------------------------------------------------


@attrs.frozen
class Begin:
    """The association is up and has data to send: start the first search."""


@attrs.frozen
class ProbeAcked:
    """The peer acknowledged probe ``probe_id``."""

    probe_id: int


@attrs.frozen
class DataInFlight:
    """Data was sent and is not yet acknowledged."""


@attrs.frozen
class DataAcked:
    """An acknowledgement advanced; ``in_flight``: data is still outstanding; ``rtt``: smoothed RTT (s)."""

    in_flight: bool
    rtt: float | None = None


@attrs.frozen
class TimerFired:
    """``next_deadline()`` has passed."""


Event = Begin | ProbeAcked | DataInFlight | DataAcked | TimerFired

# --- decisions (for the shell) --------------------------------------------------------------------


@attrs.frozen
class SendProbe:
    """Send one probe packet of exactly ``size`` bytes, tagged ``probe_id``, outside the data stream."""

    probe_id: int
    size: int


@attrs.frozen
class UsePacketSize:
    """From now on, build SCTP packets of at most ``size`` bytes; split anything larger already queued."""

    size: int
    reason: str


@attrs.frozen
class Retransmit:
    """Send everything in flight again now (it was sent at a size the path no longer carries)."""


Decision = SendProbe | UsePacketSize | Retransmit


class PacketSizeSearch:
    """One sender's packet-size state for one connection."""

    def __init__(self, settings: SearchSettings | None = None) -> None:
        self.settings = settings or SearchSettings()
        self.size = self.settings.base
        self._begun = False
        self._next_id = 1
        self._probes: dict[int, int] = {}  # probe id → size, for the round in progress
        self._late: dict[
            int, int
        ] = {}  # the last finished round's unacknowledged probes: a late ack still counts
        self._acked: list[int] = []
        self._round_deadline: float | None = None
        self._reprobe_at: float | None = None
        self._in_flight = False
        self._last_progress = 0.0
        self._rtt: float | None = None

    @property
    def searching(self) -> bool:
        return self._round_deadline is not None

    def next_deadline(self) -> float | None:
        """When the shell must feed :class:`TimerFired` (``None``: no timer needed)."""
        times = [t for t in (self._round_deadline, self._reprobe_at, self._stall_deadline()) if t is not None]
        return min(times) if times else None

    def handle(self, event: Event, now: float) -> list[Decision]:
        """Apply one event; return what the shell must do, in order."""
        if isinstance(event, Begin):
            if self._begun:
                return []
            self._begun = True
            return self._start_round(now)
        if isinstance(event, ProbeAcked):
            return self._probe_acked(event.probe_id, now)
        if isinstance(event, DataInFlight):
            if not self._in_flight:
                self._in_flight = True
                self._last_progress = now
            return []
        if isinstance(event, DataAcked):
            self._in_flight = event.in_flight
            self._last_progress = now
            if event.rtt is not None and event.rtt > 0:
                self._rtt = event.rtt
            return []
        return self._timer(now)

    # --- internals --------------------------------------------------------------------------------

    def _timeout(self, minimum: float) -> float:
        return max(minimum, self.settings.rtt_factor * self._rtt) if self._rtt is not None else minimum

    def _stall_deadline(self) -> float | None:
        if self.size <= self.settings.base or not self._in_flight:
            return None
        return self._last_progress + self._timeout(self.settings.stall_timeout)

    def _start_round(self, now: float) -> list[Decision]:
        sizes = [size for size in self.settings.candidates if size > self.size]
        self._reprobe_at = None
        if not sizes:
            return []
        self._probes, self._acked, self._late = {}, [], {}
        out: list[Decision] = []
        for size in sizes:
            probe_id, self._next_id = self._next_id, self._next_id + 1
            self._probes[probe_id] = size
            out.append(SendProbe(probe_id, size))
        self._round_deadline = now + self._timeout(self.settings.probe_timeout)
        return out

    def _probe_acked(self, probe_id: int, now: float) -> list[Decision]:
        late = self._late.pop(probe_id, None)
        if late is not None and late > self.size:  # slow, but the path carried it (a busy peer answers late)
            return self._adopt(late, now, "late probe acknowledged")
        size = self._probes.pop(probe_id, None)
        if size is None:
            return []  # a probe of an older round, or unknown: nothing to learn
        self._acked.append(size)
        if all(size > pending for pending in self._probes.values()):
            return self._finish_round(now)  # nothing larger is still pending: the largest wins now
        return []

    def _finish_round(self, now: float) -> list[Decision]:
        self._round_deadline = None
        best = max(self._acked, default=self.size)
        self._late = {i: size for i, size in self._probes.items() if size > best}
        self._probes, self._acked = {}, []
        if best > self.size:
            return self._adopt(best, now, "probe acknowledged")
        if self.size < self.settings.candidates[0]:
            self._reprobe_at = now + self.settings.reprobe_interval
        return []

    def _adopt(self, size: int, now: float, reason: str) -> list[Decision]:
        self.size = size
        self._last_progress = now  # the stall clock of the new size starts now
        self._late = {i: late for i, late in self._late.items() if late > size}
        self._reprobe_at = (
            now + self.settings.reprobe_interval if size < self.settings.candidates[0] else None
        )
        return [UsePacketSize(size, reason)]

    def _timer(self, now: float) -> list[Decision]:
        out: list[Decision] = []
        stall = self._stall_deadline()
        if stall is not None and now >= stall:
            self.size = self.settings.base
            self._last_progress = now
            out += [
                UsePacketSize(self.settings.base, "black hole: data in flight, no acknowledgement"),
                Retransmit(),
            ]
            return out + self._start_round(now)
        if self._round_deadline is not None and now >= self._round_deadline:
            out += self._finish_round(now)
        if self._reprobe_at is not None and now >= self._reprobe_at:
            out += self._start_round(now)
        return out
