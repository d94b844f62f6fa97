"""The room-wide hold cap (issue 10 item 8): how many jobs the room's workers hold for each client.

Workers claim a hold (`hold` op, docs/signaling.md) before they take a client's `job_request`, and release it
when the job leaves them. The book counts, per (room, client), the (worker, job_ref) pairs claimed; the worker
is the connection's own peer id, never a field of the payload. A claim is idempotent per (worker, job_ref);
a sync replaces one worker's whole set (a restarted or reconnected worker re-claims what its core holds). A
worker's holds keep counting while it may resume (`resume_grace`) and are dropped when that runs out.

With `--redis` the holds live in Redis (`redis_holds.py`), counted across nodes; a worker's holds stop counting
when the registry no longer has it (its grace ran out, or its node died `node_ttl` ago and the grace after).
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs

from fsm_worker.protocol.errors import SignalingCode, SignalingRefusal
from fsm_worker.protocol.signaling import HoldClaim, ok_ack, parse_hold

Key = tuple[str, str]  # (room, peer id)


@attrs.define
class HoldBook:
    """The holds of one node's workers, counted per client. No IO."""

    max_per_client: int
    max_per_worker: int
    grace: float
    _by_client: dict[Key, set[tuple[str, str]]] = attrs.field(factory=dict)  # → {(worker, job_ref)}
    _by_worker: dict[Key, dict[str, str]] = attrs.field(factory=dict)  # → {job_ref: client}
    _gone: dict[Key, float] = attrs.field(factory=dict)  # workers away (in their grace) since

    async def count(self, room: str, client: str, now: float) -> int:
        """The holds counted for `client` now."""
        self._expire(now)
        return len(self._by_client.get((room, client), ()))

    async def claim(self, room: str, worker: str, client: str, job_ref: str, now: float) -> int:
        """Count one hold; return the client's count. Refused (`HOLD_LIMIT`, naming the setting) over a cap."""
        self._expire(now)
        refs = self._by_worker.get((room, worker), {})
        if refs.get(job_ref) == client:
            return len(self._by_client[(room, client)])  # the same claim again: counted once
        held = len(self._by_client.get((room, client), ()))
        if self.max_per_client and held >= self.max_per_client:
            raise SignalingRefusal(
                SignalingCode.HOLD_LIMIT,
                f"client {client!r} holds max_holds_per_client ({self.max_per_client}) jobs in the room",
            )
        if job_ref not in refs and len(refs) >= self.max_per_worker:
            raise SignalingRefusal(
                SignalingCode.HOLD_LIMIT,
                f"this worker holds max_holds_per_worker ({self.max_per_worker}) jobs",
            )
        self._release(room, worker, job_ref)  # the ref held for another client moves
        self._by_worker.setdefault((room, worker), {})[job_ref] = client
        self._by_client.setdefault((room, client), set()).add((worker, job_ref))
        return held + 1

    async def release(self, room: str, worker: str, job_ref: str) -> None:
        """Stop counting the worker's hold of `job_ref` (none held: nothing changes)."""
        self._release(room, worker, job_ref)

    def _release(self, room: str, worker: str, job_ref: str) -> None:
        refs = self._by_worker.get((room, worker))
        client = refs.pop(job_ref, None) if refs is not None else None
        if client is None:
            return
        held = self._by_client.get((room, client))
        if held is not None:
            held.discard((worker, job_ref))
            if not held:
                del self._by_client[(room, client)]
        if not refs:
            del self._by_worker[(room, worker)]

    async def sync(self, room: str, worker: str, holds: tuple[HoldClaim, ...]) -> None:
        """Replace the worker's holds with `holds` (counted even over the client cap: they are held already)."""
        self._drop_worker(room, worker)
        if holds:
            refs = self._by_worker.setdefault((room, worker), {})
            for hold in holds:
                refs[hold.job_ref] = hold.client
                self._by_client.setdefault((room, hold.client), set()).add((worker, hold.job_ref))

    def worker_left(self, room: str, worker: str, now: float) -> None:
        """The worker's connection dropped: its holds count until its resume grace ends."""
        if (room, worker) in self._by_worker:
            self._gone[(room, worker)] = now

    def worker_back(self, room: str, worker: str) -> None:
        self._gone.pop((room, worker), None)

    def _drop_worker(self, room: str, worker: str) -> None:
        for job_ref in list(self._by_worker.get((room, worker), {})):
            self._release(room, worker, job_ref)
        self._gone.pop((room, worker), None)

    def _expire(self, now: float) -> None:
        if self._gone:
            for (room, worker), since in list(self._gone.items()):
                if now >= since + self.grace:
                    self._drop_worker(room, worker)


class Holds(Protocol):
    """Where a server keeps the holds: this node's memory (`HoldBook`) or Redis (`redis_holds.RedisHolds`)."""

    max_per_client: int
    max_per_worker: int

    async def count(self, room: str, client: str, now: float) -> int: ...
    async def claim(self, room: str, worker: str, client: str, job_ref: str, now: float) -> int: ...
    async def release(self, room: str, worker: str, job_ref: str) -> None: ...
    async def sync(self, room: str, worker: str, holds: tuple[HoldClaim, ...]) -> None: ...
    def worker_left(self, room: str, worker: str, now: float) -> None: ...
    def worker_back(self, room: str, worker: str) -> None: ...


async def hold_event(
    book: Holds | None, room: str, worker: str, role: str, args: tuple[Any, ...], now: float
) -> dict[str, Any]:
    """Answer one `hold` event of the connection holding `worker` (raises `SignalingRefusal`; nothing changes)."""
    if book is None:
        raise SignalingRefusal(
            SignalingCode.UNKNOWN_EVENT, "hold: this server does not count holds (max_holds_per_client = 0)"
        )
    if role != "worker":
        raise SignalingRefusal(SignalingCode.NOT_A_WORKER, "hold: only a worker may claim or release holds")
    request = parse_hold(args, max_entries=book.max_per_worker)
    if request.sync is not None:
        await book.sync(room, worker, request.sync)
        return ok_ack(holds=len(request.sync))
    claim = request.claim
    assert claim is not None
    if not claim.held:
        await book.release(room, worker, claim.job_ref)
        return ok_ack(held=await book.count(room, claim.client, now))
    return ok_ack(held=await book.claim(room, worker, claim.client, claim.job_ref, now))
