"""The followed worker's liveness: a silent worker is probed, an unreachable one given up. Pure data."""

from __future__ import annotations

import attrs


@attrs.define
class Liveness:
    """When the worker is next probed (`period` after it was last heard), and since when sends to it fail."""

    period: float  # seconds of silence before a probe (`ClientTimeouts.liveness`)
    probe_at: float | None = None
    unreachable_since: float | None = None  # the first of the refused sends in a row

    @property
    def unreachable(self) -> bool:
        return self.unreachable_since is not None

    def follow(self, now: float) -> None:
        """Start (or restart) the silence the next probe waits for."""
        self.probe_at = now + self.period

    def heard(self, now: float, following: bool) -> None:
        """The worker said something: it is reachable; a followed job's probe moves ahead."""
        self.unreachable_since = None
        if following:
            self.follow(now)

    def delivered(self) -> None:
        self.unreachable_since = None

    def refused(self, now: float) -> float:
        """A send to the worker was refused; how long it has been unreachable."""
        if self.unreachable_since is None:
            self.unreachable_since = now
        return now - self.unreachable_since

    def due(self, now: float) -> bool:
        return self.probe_at is not None and self.probe_at <= now

    def stop(self) -> None:
        self.probe_at = None
