"""The peer registry: who holds which peer id in which room, with what metadata.

The identity rule lives in :func:`decide_claim` (pure) and is shared by every backend; this module also holds
the in-memory backend used by a single server. :mod:`fsm_worker.server.redis_registry` shares state
between server processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, Protocol

import attrs

from fsm_worker.protocol.errors import SignalingCode
from fsm_worker.server.resume import Lineage, secret_wins


@attrs.frozen
class SessionRecord:
    """Who holds a peer id. ``since`` is the disconnect time once ``connected`` is false.

    ``epoch`` and ``blind`` are the holder's :class:`~fsm_worker.server.resume.Lineage` (records written
    before lineages existed read as blind claims of epoch 0).
    """

    sid: str
    node: str
    role: str
    secret_hash: str
    connected: bool = True
    since: float = 0.0
    epoch: float = 0.0
    blind: bool = True

    @property
    def lineage(self) -> Lineage:
        """The claim history this record continues."""
        return Lineage(self.epoch, self.blind)


@attrs.frozen
class PeerView:
    """A connected peer as discovery returns it."""

    peer_id: str
    role: str
    metadata: Mapping[str, Any]


class ClaimKind(StrEnum):
    """Outcome of a connect's claim on a peer id."""

    NEW = "new"  # no usable record: first come, first served
    RESUME = "resume"  # the secret holder came back
    REFUSED = "refused"


@attrs.frozen
class ClaimDecision:
    """What :func:`decide_claim` decided; ``replaced_sid`` is a live old connection to drop."""

    kind: ClaimKind
    code: SignalingCode | None = None
    message: str = ""
    replaced_sid: str | None = None
    replaced_node: str | None = None
    #: the lineage the new record continues (``None`` when refused)
    lineage: Lineage | None = None
    #: the secret issued for a new lineage (set by the registry from ``ClaimRequest.issue``)
    secret: str | None = None


def decide_claim(
    existing: SessionRecord | None,
    presented_hash: str | None,
    *,
    now: float,
    grace: float,
    holder_alive: bool,
    node_last_seen: float | None,
    presented: Lineage | None = None,
) -> ClaimDecision:
    """The identity rule.

    - the holder of the id's resume secret always gets it back (an old live socket is replaced): the secret
      matches the record, or it is a verified secret (``presented``) whose lineage beats the record's
      (:func:`~fsm_worker.server.resume.secret_wins`; with no record a verified secret always resumes);
    - a live holder keeps its id against anyone else;
    - for ``grace`` seconds after a disconnect only the secret holder may claim the id;
    - after that first come first served; with no record at all the claim is *blind* (the server does not
      know the id's history, e.g. after a restart) and gives way to any verified secret that comes later.

    ``holder_alive`` says whether ``existing`` (if connected) is really alive; when its node died,
    ``node_last_seen`` (its last heartbeat, ``None`` if unknown) stands in for the disconnect time.
    """
    if existing is None:
        if presented is not None:
            return ClaimDecision(ClaimKind.RESUME, lineage=presented)
        return ClaimDecision(ClaimKind.NEW, lineage=Lineage(now, blind=True))
    alive = existing.connected and holder_alive
    matches = presented_hash is not None and presented_hash == existing.secret_hash
    if matches or (presented is not None and secret_wins(presented, existing.lineage)):
        return ClaimDecision(
            ClaimKind.RESUME,
            replaced_sid=existing.sid if alive else None,
            replaced_node=existing.node if alive else None,
            lineage=existing.lineage if matches or presented is None else presented,
        )
    if existing.connected and holder_alive:
        return ClaimDecision(
            ClaimKind.REFUSED, SignalingCode.PEER_ID_TAKEN, "peer id is held by a live connection"
        )
    since = existing.since if not existing.connected else node_last_seen
    left = 0.0 if since is None else since + grace - now
    if left > 0:
        return ClaimDecision(
            ClaimKind.REFUSED,
            SignalingCode.PEER_ID_RESERVED,
            f"peer id is reserved for its previous holder for {left:.1f} more seconds",
        )
    return ClaimDecision(ClaimKind.NEW, lineage=Lineage(now, blind=False))


@attrs.frozen
class ClaimRequest:
    """Everything a connect asks of the registry."""

    room: str
    peer_id: str
    sid: str
    role: str
    metadata: Mapping[str, Any]
    presented_hash: str | None
    secret_hash: str  # hash to store if the claim succeeds (unless ``issue`` makes the secret)
    #: the lineage the presented secret proves (verified by the server's key), if any
    presented: Lineage | None = None
    #: makes the secret of a new lineage; returns it with the hash to store
    issue: Callable[[Lineage], tuple[str, str]] | None = None


def record_for(req: ClaimRequest, decision: ClaimDecision, node: str) -> tuple[SessionRecord, str | None]:
    """The record a successful claim stores, and the secret newly issued for it (``None``: keep the presented one)."""
    lineage = decision.lineage or Lineage(0.0, blind=True)
    secret_hash, secret = req.secret_hash, None
    if decision.kind is ClaimKind.NEW and req.issue is not None:
        secret, secret_hash = req.issue(lineage)
    record = SessionRecord(
        sid=req.sid, node=node, role=req.role, secret_hash=secret_hash, epoch=lineage.epoch,
        blind=lineage.blind,
    )  # fmt: skip
    return record, secret


def lost_id(local: SessionRecord, stored: SessionRecord | None) -> bool:
    """Whether a node's live session lost its id: the shared record names another session.

    Every claim that replaces a record won the identity rule against it (``decide_claim``), so a record
    naming another sid is final; no record at all (Redis forgot) is not a loss: the holder re-publishes.
    """
    return stored is not None and stored.sid != local.sid


class Registry(Protocol):
    """Storage of peer identities; every method is safe to call concurrently."""

    node_id: str

    async def start(self) -> None:
        """Connect to storage and begin node heartbeats."""

    async def close(self) -> None:
        """Release this node's peers and stop."""

    async def claim(self, req: ClaimRequest, now: float) -> ClaimDecision:
        """Atomically apply :func:`decide_claim` and, unless refused, bind the id to ``req.sid``.

        A new lineage's secret (from ``req.issue``) comes back in ``ClaimDecision.secret``.
        """

    async def release(self, room: str, peer_id: str, sid: str, now: float) -> None:
        """Mark the id disconnected if ``sid`` still holds it (a replaced socket's release is a no-op)."""

    async def set_metadata(self, room: str, peer_id: str, sid: str, metadata: Mapping[str, Any]) -> bool:
        """Store metadata if ``sid`` still holds the id."""

    async def is_connected(self, room: str, peer_id: str) -> bool:
        """True if a live connection holds the id."""

    async def peers(self, room: str) -> list[PeerView]:
        """Every connected peer of a room."""


@attrs.define
class _Entry:
    record: SessionRecord
    metadata: Mapping[str, Any]


@attrs.define
class MemoryRegistry:
    """Single-process registry (the default). Lost on restart: then identities are first come first served."""

    grace: float
    node_id: str = "local"
    _rooms: dict[str, dict[str, _Entry]] = attrs.field(factory=dict)

    async def start(self) -> None:
        """Nothing to connect."""

    async def close(self) -> None:
        """Forget everything."""
        self._rooms.clear()

    async def claim(self, req: ClaimRequest, now: float) -> ClaimDecision:
        room = self._rooms.setdefault(req.room, {})
        self._prune(room, now)
        entry = room.get(req.peer_id)
        decision = decide_claim(
            entry.record if entry else None,
            req.presented_hash,
            now=now,
            grace=self.grace,
            holder_alive=True,
            node_last_seen=None,
            presented=req.presented,
        )
        if decision.kind is ClaimKind.REFUSED:
            return decision
        record, secret = record_for(req, decision, self.node_id)
        room[req.peer_id] = _Entry(record, req.metadata)
        return attrs.evolve(decision, secret=secret)

    async def release(self, room: str, peer_id: str, sid: str, now: float) -> None:
        entry = self._rooms.get(room, {}).get(peer_id)
        if entry is not None and entry.record.sid == sid and entry.record.connected:
            entry.record = attrs.evolve(entry.record, connected=False, since=now)
            entry.metadata = {}

    async def set_metadata(self, room: str, peer_id: str, sid: str, metadata: Mapping[str, Any]) -> bool:
        entry = self._rooms.get(room, {}).get(peer_id)
        if entry is None or entry.record.sid != sid or not entry.record.connected:
            return False
        entry.metadata = metadata
        return True

    async def is_connected(self, room: str, peer_id: str) -> bool:
        entry = self._rooms.get(room, {}).get(peer_id)
        return entry is not None and entry.record.connected

    async def peers(self, room: str) -> list[PeerView]:
        return [
            PeerView(peer_id, e.record.role, e.metadata)
            for peer_id, e in self._rooms.get(room, {}).items()
            if e.record.connected
        ]

    def _prune(self, room: dict[str, _Entry], now: float) -> None:
        if len(room) < 1024:
            return
        for peer_id in [
            p for p, e in room.items() if not e.record.connected and e.record.since + self.grace < now
        ]:
            del room[peer_id]
