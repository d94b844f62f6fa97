"""Bidding for a job (pure): the candidates asked, their answers, the deadlines, and the choice.

An offer that places the job now (lowest estimate, first to accept on ties) beats any queued one; among
queued offers the earliest estimated start wins (then the lower position, then the first to answer). Every
other candidate that may hold a bid is released; `ClientJobCore` sends what the choice says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs

from fsm_worker.protocol.messages import JobResponse

#: A queued offer that names no position sorts after every one that does.
NO_POSITION = 2**31


@attrs.frozen
class Won:
    """The bidding chose `winner`; `losers` are released. A queued winner has its place and estimate."""

    winner: str
    losers: tuple[str, ...]
    queued: bool = False
    queue_position: int | None = None
    estimated_start_seconds: float | None = None


@attrs.frozen
class Lost:
    """Nobody offered: `silent` never answered (they are released), `rejected` says why each refused."""

    silent: tuple[str, ...]
    rejected: dict[str, tuple[str, Sequence[str]]]


class Bidding:
    """One job's bids; deadlines are data (`deadline()`, `due(now)`)."""

    def __init__(self) -> None:
        self.candidates: tuple[str, ...] = ()
        self.pending: set[str] = set()
        self.accepted: dict[str, float] = {}
        self.queue_offers: dict[str, tuple[float, int]] = {}  # worker → (estimated start, position)
        self.rejected: dict[str, tuple[str, Sequence[str]]] = {}
        self.bid_window = 0.0
        self.response_deadline: float | None = None
        self.window_ends: float | None = None
        self.released: set[str] = set()

    def open(self, workers: tuple[str, ...], window: float, response_by: float) -> tuple[str, ...]:
        """Ask `workers` (each once, in order); every answer is due by `response_by`."""
        self.candidates = tuple(dict.fromkeys(workers))
        self.pending = set(self.candidates)
        self.bid_window = window
        self.response_deadline = response_by
        return self.candidates

    def answer(self, sender: str, response: JobResponse, now: float) -> bool:
        """Take one candidate's answer (others are ignored); True when the bidding closes now."""
        if sender not in self.pending:
            return False  # not asked, or already answered: ignored
        self.pending.discard(sender)
        if response.accepted and response.queued:
            start = response.estimated_start_seconds
            self.queue_offers[sender] = (
                math.inf if start is None else start,
                response.queue_position if response.queue_position is not None else NO_POSITION,
            )
            if self.bid_window > 0 and self.window_ends is None:
                self.window_ends = now + self.bid_window
        elif response.accepted:
            self.accepted[sender] = response.estimated_duration_minutes or 0.0
            if self.bid_window <= 0:
                return True
            if self.window_ends is None:
                self.window_ends = now + self.bid_window
        else:
            self.rejected[sender] = (response.reason or "rejected", response.details or ())
        return not self.pending

    def deadline(self) -> float | None:
        return min((t for t in (self.response_deadline, self.window_ends) if t is not None), default=None)

    def due(self, now: float) -> bool:
        return any(t is not None and t <= now for t in (self.response_deadline, self.window_ends))

    def close(self, response_timeout: float) -> Won | Lost:
        """Choose, and mark every other candidate that may hold a bid as released."""
        if not self.accepted and not self.queue_offers:
            for worker in sorted(self.pending):
                self.rejected[worker] = ("no answer", [f"no job_response within {response_timeout:g} s"])
            silent = tuple(sorted(self.pending))  # a late acceptance from these is released at once
            self.released.update(silent)
            return Lost(silent, self.rejected)
        if self.accepted:
            winner = min(self.accepted, key=lambda worker: self.accepted[worker])
        else:
            winner = min(self.queue_offers, key=lambda worker: self.queue_offers[worker])
        offered = [*self.accepted, *self.queue_offers, *sorted(self.pending)]
        losers = tuple(worker for worker in offered if worker != winner)
        self.released.update(losers)
        if winner not in self.queue_offers or self.accepted:
            return Won(winner, losers)
        start, position = self.queue_offers[winner]
        return Won(
            winner,
            losers,
            queued=True,
            queue_position=position if position < NO_POSITION else None,
            estimated_start_seconds=start if math.isfinite(start) else None,
        )

    def release_all(self) -> list[str]:
        """Giving the job up while bidding: every candidate that did not refuse is released."""
        releasable = [w for w in self.candidates if w not in self.rejected]
        self.released.update(releasable)
        return releasable

    def end(self) -> None:
        """No more deadlines (the job is assigned, failed or abandoned)."""
        self.response_deadline = self.window_ends = None

    def validate(self, worker: str | None, settled: bool) -> None:
        """The winner is never released; once `settled`, every offer but the winner's is released."""
        if worker is not None:
            assert worker not in self.released, "the winner is never released"
        if settled:
            offered = set(self.accepted) | set(self.queue_offers)
            assert len(offered - self.released - {worker}) == 0, "one entry per job in the room"
