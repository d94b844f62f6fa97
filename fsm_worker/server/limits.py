"""Per-connection limits of the signaling server, as pure state: time is a parameter, deadlines are data.

- :class:`TokenBucket`: the event rate of one connection (``rate`` per second, bursts up to ``burst``).
- :class:`ReplyCredits`: the replies a connection sends without paying (the peer that asked paid for them).
- :class:`NoticeLog`: decides which refusals of one connection get a log line (the first of each kind, then
  one summary per interval), so a flood of bad frames cannot flood the log.
- :class:`Admission`: the Engine.IO connections of the node: total and per-address caps, and the deadline by
  which each must have authenticated.

The server (the shell) feeds these with the monotonic clock and acts on what they return.
"""

from __future__ import annotations

from collections import Counter

import attrs


@attrs.define
class TokenBucket:
    """``take(now)`` is True while the connection stays within ``rate`` events/s with bursts of ``burst``."""

    rate: float
    burst: float
    tokens: float = attrs.field(default=-1.0)
    updated: float | None = None

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        if self.updated is None or self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def hold(self, seconds: float) -> float:
        """After a refusal: how long the shell holds off reading, until ``seconds`` worth of tokens are back.

        At least one token, at most the burst. Holding for a batch rather than for the next token keeps the
        rate a flooder gets (tokens accrue meanwhile) but answers it about one refusal per batch instead of one
        per admitted event: a connection at the limit costs the server little more than its admitted events.
        """
        wanted = min(float(self.burst), max(1.0, self.rate * seconds))
        return max(0.0, (wanted - self.tokens) / self.rate)

    def refund(self) -> None:
        """Give back the token a frame took (it turned out to be a reply someone else paid for)."""
        self.tokens = min(float(self.burst), self.tokens + 1.0)


@attrs.define
class ReplyCredits:
    """Replies one connection may send without paying for them: who asked pays.

    Each message routed *to* this connection grants it one credit toward the peer that sent it (at most
    ``cap`` per peer, at most ``max_peers`` peers: the oldest is forgotten); a message this connection sends to a
    peer it holds a credit for spends the credit instead of a token of its own bucket. So a worker that answers
    a flooder's every ``job_request`` spends the flooder's budget, not its own, and its other clients' replies
    are never held up by its bucket.
    """

    cap: int
    max_peers: int = 1024
    credits: dict[str, int] = attrs.field(factory=dict)

    def grant(self, asker: str) -> None:
        """``asker`` sent this connection a message."""
        count = self.credits.pop(asker, 0)  # re-inserted last: the dict's order is recency
        self.credits[asker] = min(self.cap, count + 1)
        if len(self.credits) > self.max_peers:
            del self.credits[next(iter(self.credits))]

    def spend(self, to: str) -> bool:
        """This connection sends to ``to``: True if a credit paid for it."""
        count = self.credits.get(to, 0)
        if count <= 0:
            return False
        if count == 1:
            del self.credits[to]
        else:
            self.credits[to] = count - 1
        return True


@attrs.define
class NoticeLog:
    """Which notices of one connection to log: the first of each kind at once, the rest as periodic summaries."""

    interval: float
    seen: Counter[str] = attrs.field(factory=Counter)
    unlogged: Counter[str] = attrs.field(factory=Counter)
    next_summary: float = 0.0

    def note(self, kind: str, now: float) -> tuple[bool, dict[str, int] | None]:
        """Record one notice: (log this one in full?, a summary of the unlogged ones to log now, if due)."""
        first = self.seen[kind] == 0
        self.seen[kind] += 1
        if first:
            if self.next_summary == 0.0:
                self.next_summary = now + self.interval
            return True, None
        self.unlogged[kind] += 1
        return False, self.due(now)

    def due(self, now: float) -> dict[str, int] | None:
        """The pending summary if its time has come (or ``now`` is ``inf``: the connection ended)."""
        if not self.unlogged or now < self.next_summary:
            return None
        summary = dict(self.unlogged)
        self.unlogged.clear()
        self.next_summary = now + self.interval
        return summary


@attrs.frozen
class Refusal:
    """Why a new connection was not admitted; ``setting`` names the limit."""

    setting: str
    limit: int

    @property
    def message(self) -> str:
        """The text sent back to the refused connection."""
        return f"TOO_MANY_CONNECTIONS: {self.setting}={self.limit} reached"


@attrs.define
class _Pending:
    address: str
    deadline: float | None  # None once authenticated


@attrs.define
class Admission:
    """Engine.IO connections of this node: caps on admission and the authentication deadline."""

    max_total: int
    max_per_address: int
    auth_timeout: float
    _conns: dict[str, _Pending] = attrs.field(factory=dict)
    _per_address: Counter[str] = attrs.field(factory=Counter)

    def open(self, conn: str, address: str, now: float) -> Refusal | None:
        """Admit a new connection (``None``) or say which cap it hits."""
        if len(self._conns) >= self.max_total:
            return Refusal("max_connections", self.max_total)
        if self._per_address[address] >= self.max_per_address:
            return Refusal("max_connections_per_address", self.max_per_address)
        self._conns[conn] = _Pending(address, now + self.auth_timeout)
        self._per_address[address] += 1
        return None

    def authenticated(self, conn: str) -> None:
        """The connection presented a valid token and holds a peer id: no deadline any more."""
        pending = self._conns.get(conn)
        if pending is not None:
            pending.deadline = None

    def close(self, conn: str) -> None:
        """The connection is gone."""
        pending = self._conns.pop(conn, None)
        if pending is not None:
            self._per_address[pending.address] -= 1
            if self._per_address[pending.address] <= 0:
                del self._per_address[pending.address]

    def next_deadline(self) -> float | None:
        """When the earliest unauthenticated connection expires."""
        return min((p.deadline for p in self._conns.values() if p.deadline is not None), default=None)

    def expired(self, now: float) -> list[str]:
        """Connections past their authentication deadline (each reported once)."""
        late = [c for c, p in self._conns.items() if p.deadline is not None and p.deadline <= now]
        for conn in late:
            self._conns[conn].deadline = None
        return late

    def __len__(self) -> int:
        return len(self._conns)
