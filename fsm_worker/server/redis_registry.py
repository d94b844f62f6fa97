"""Peer registry in Redis, shared by every server node.

Keys (``{ns}`` is the key prefix):

- ``{ns}:nodes`` hash: node id → last heartbeat (unix time). A node silent for ``node_ttl`` is dead:
  its peers are treated as disconnected at its last heartbeat, hidden from discovery and routing.
- ``{ns}:sess:{room}`` hash: peer id → JSON :class:`SessionRecord` (sid, node, role, secret hash, state).
- ``{ns}:meta:{room}`` hash: peer id → JSON metadata of connected peers.

Discovery is one round trip: a Lua script joins the room's two hashes into one JSON string, pipelined
with a read of the node table.
Claims are optimistic transactions (``WATCH`` on the room's session hash) around :func:`decide_claim`;
conditional writes by the holding sid are small Lua scripts.

Redis can restart (losing everything when it does not persist) or stall. This node is the authority on its
own connections (``_local``), so:

- routing and discovery trust a record of this node only if the connection is still in ``_local``;
- a release that fails is kept and retried until Redis takes it;
- every heartbeat notices when Redis forgot this node (``HSET`` creates the field again) or after it
  failed, and then re-publishes every live local peer (:meth:`RedisRegistry.reconcile`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from fsm_worker.logfmt import log_event
from fsm_worker.server.registry import (
    ClaimDecision,
    ClaimKind,
    ClaimRequest,
    PeerView,
    SessionRecord,
    decide_claim,
    lost_id,
    record_for,
)

log = logging.getLogger("fsm_worker.server.redis")

# KEYS: sess, meta. ARGV: peer id, holding sid, metadata JSON.
_SET_META = """
local s = redis.call('HGET', KEYS[1], ARGV[1])
if not s then return 0 end
local r = cjson.decode(s)
if r['sid'] ~= ARGV[2] or not r['connected'] then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""
# KEYS: sess, meta. ARGV: peer id, holding sid, released record JSON.
_RELEASE = """
local s = redis.call('HGET', KEYS[1], ARGV[1])
if not s then return 0 end
if cjson.decode(s)['sid'] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

# KEYS: sess, meta. Returns one JSON array of [peer id, session, metadata] for peers with metadata
# (connected ones): one bulk string is far cheaper to parse client-side than a 10,000-field reply.
_PEERS = """
local s = redis.call('HGETALL', KEYS[1])
local m = redis.call('HGETALL', KEYS[2])
local meta = {}
for i = 1, #m, 2 do meta[m[i]] = m[i + 1] end
local out = {}
for i = 1, #s, 2 do
  local md = meta[s[i]]
  if md then out[#out + 1] = '[' .. cjson.encode(s[i]) .. ',' .. s[i + 1] .. ',' .. md .. ']' end
end
return '[' .. table.concat(out, ',') .. ']'
"""


def _encode(record: SessionRecord) -> str:
    return json.dumps(attrs.asdict(record), separators=(",", ":"))


def _decode(raw: str | bytes | None) -> SessionRecord | None:
    if raw is None:
        return None
    return SessionRecord(**json.loads(raw))


@attrs.define
class RedisRegistry:
    """Registry shared through Redis; ``node_id`` must be unique per server process."""

    url: str
    node_id: str
    grace: float
    node_ttl: float = 10.0
    prefix: str = "fsm_worker"
    #: seconds a Redis command may take before it counts as failed (a stall must not hang handlers)
    timeout: float = 2.0
    #: called with a sid that lost its id while re-publishing (another node's blind claimant, or ours)
    on_evict: Callable[[str], Awaitable[None]] | None = None
    _redis: aioredis.Redis | None = None
    _node_seen: dict[str, float] = attrs.field(factory=dict)
    _local: dict[tuple[str, str], SessionRecord] = attrs.field(factory=dict)
    _local_meta: dict[tuple[str, str], Mapping[str, Any]] = attrs.field(factory=dict)
    _unreleased: dict[tuple[str, str], SessionRecord] = attrs.field(factory=dict)
    _healthy: bool = False
    _heartbeat: asyncio.Task[None] | None = None
    _set_meta: Any = None
    _release: Any = None
    _peers: Any = None

    @property
    def redis(self) -> aioredis.Redis:
        """The live connection pool."""
        if self._redis is None:
            raise RuntimeError("registry not started")
        return self._redis

    def _k(self, kind: str, room: str) -> str:
        return f"{self.prefix}:{kind}:{room}"

    @property
    def _nodes_key(self) -> str:
        return f"{self.prefix}:nodes"

    async def start(self) -> None:
        self._redis = aioredis.Redis.from_url(
            self.url, decode_responses=True, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )
        self._set_meta = self.redis.register_script(_SET_META)
        self._release = self.redis.register_script(_RELEASE)
        self._peers = self.redis.register_script(_PEERS)
        await self._beat()
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name=f"heartbeat-{self.node_id}")

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._redis is None:
            return
        try:
            now = time.time()
            for (room, peer_id), record in list(self._local.items()):
                await self.release(room, peer_id, record.sid, now)
            await self.redis.hdel(self._nodes_key, self.node_id)
        except Exception as exc:
            log_event(log, logging.WARNING, "registry_close_failed", node=self.node_id, error=repr(exc))
        finally:
            await self._redis.aclose()
            self._redis = None

    @property
    def healthy(self) -> bool:
        """True while the last heartbeat reached Redis."""
        return self._healthy

    async def _beat(self) -> bool:
        """Write this node's heartbeat; True if Redis did not know this node (it restarted or was flushed)."""
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._nodes_key, self.node_id, repr(now))
            pipe.hgetall(self._nodes_key)
            created, nodes = await pipe.execute()
        self._node_seen = {k: float(v) for k, v in nodes.items()}
        self._healthy = True
        return bool(created)

    async def _heartbeat_loop(self) -> None:
        failed = False
        while True:
            await asyncio.sleep(self.node_ttl / 4 if not (failed or self._unreleased) else 0.25)
            try:
                forgotten = await self._beat()
                if forgotten or failed or self._unreleased:
                    await self.reconcile(forgotten=forgotten)
                await self.drop_lost_ids()
                failed = False
            except Exception as exc:
                self._healthy = False
                if not failed:
                    log_event(log, logging.ERROR, "heartbeat_failed", node=self.node_id, error=repr(exc))
                failed = True

    async def reconcile(self, *, forgotten: bool) -> None:
        """Retry failed releases, then re-publish every live local peer (Redis may have lost or missed them)."""
        for key, record in list(self._unreleased.items()):
            await self._write_release(key, record)
            self._unreleased.pop(key, None)
        republished = 0
        for key, record in list(self._local.items()):
            if self._local.get(key) is record and await self._republish(key, record):
                republished += 1
        log_event(
            log, logging.WARNING if forgotten else logging.INFO, "registry_reconciled", node=self.node_id,
            republished=republished, redis_forgot_us=forgotten,
        )  # fmt: skip

    async def _republish(self, key: tuple[str, str], record: SessionRecord) -> bool:
        """Write a live local peer's record back unless a stronger claim holds it; False if it lost the id."""
        room, peer_id = key
        sess = self._k("sess", room)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(sess)
                    existing = _decode(await pipe.hget(sess, peer_id))
                    evict: str | None = None
                    if existing is not None and existing.sid != record.sid:
                        raw = await pipe.hget(self._nodes_key, existing.node)
                        seen = float(raw) if raw is not None else None
                        alive = self._holder_alive(existing, room, peer_id, seen, time.time())
                        decision = decide_claim(
                            existing, record.secret_hash, now=time.time(), grace=self.grace, holder_alive=alive,
                            node_last_seen=seen, presented=record.lineage,
                        )  # fmt: skip
                        if decision.kind is not ClaimKind.RESUME:
                            await pipe.unwatch()  # type: ignore[no-untyped-call]
                            await self._evict(record.sid, key)
                            return False
                        evict = decision.replaced_sid
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(sess, peer_id, _encode(record))
                    pipe.hset(self._k("meta", room), peer_id, json.dumps(self._local_meta.get(key, {})))
                    await pipe.execute()
                    if evict is not None and self.on_evict is not None:
                        await self.on_evict(evict)
                    return True
                except WatchError:
                    continue

    async def drop_lost_ids(self) -> int:
        """Evict every local peer whose id Redis now gives to another session; how many were evicted.

        Another node that wins an id from one of ours (while re-publishing after a Redis restart) disconnects
        our socket through the Socket.IO manager's pub/sub, which loses what it routes while this node is not
        subscribed (Redis just came back): the record in Redis is what counts, checked every heartbeat.
        """
        rooms: dict[str, list[tuple[tuple[str, str], SessionRecord]]] = {}
        for key, record in self._local.items():
            rooms.setdefault(key[0], []).append((key, record))
        evicted = 0
        for room, entries in rooms.items():
            stored = await self.redis.hmget(self._k("sess", room), [key[1] for key, _ in entries])
            for (key, record), raw in zip(entries, stored, strict=True):
                if self._local.get(key) is record and lost_id(record, _decode(raw)):
                    await self._evict(record.sid, key, "id_taken_elsewhere")
                    evicted += 1
        return evicted

    async def _evict(self, sid: str, key: tuple[str, str], event: str = "republish_lost_id") -> None:
        self._local.pop(key, None)
        self._local_meta.pop(key, None)
        log_event(log, logging.WARNING, event, node=self.node_id, peer_id=key[1], sid=sid)
        if self.on_evict is not None:
            await self.on_evict(sid)

    def _alive(self, node: str, last_seen: float | None, now: float) -> bool:
        return node == self.node_id or (last_seen is not None and now - last_seen < self.node_ttl)

    async def _last_seen(self, node: str, now: float) -> float | None:
        """A node's heartbeat, from the cache when fresh, else from Redis."""
        seen = self._node_seen.get(node)
        if seen is None or now - seen >= self.node_ttl:
            raw = await self.redis.hget(self._nodes_key, node)
            seen = float(raw) if raw is not None else None
            if seen is not None:
                self._node_seen[node] = seen
        return seen

    def _holder_alive(
        self, record: SessionRecord, room: str, peer_id: str, seen: float | None, now: float
    ) -> bool:
        if record.node == self.node_id:
            local = self._local.get((room, peer_id))
            return local is not None and local.sid == record.sid
        return self._alive(record.node, seen, now)

    async def claim(self, req: ClaimRequest, now: float) -> ClaimDecision:
        sess = self._k("sess", req.room)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(sess)
                    existing = _decode(await pipe.hget(sess, req.peer_id))
                    seen = None
                    if existing is not None and existing.node != self.node_id:
                        raw = await pipe.hget(self._nodes_key, existing.node)
                        seen = float(raw) if raw is not None else None
                    alive = existing is not None and self._holder_alive(
                        existing, req.room, req.peer_id, seen, now
                    )
                    decision = decide_claim(
                        existing, req.presented_hash, now=now, grace=self.grace, holder_alive=alive,
                        node_last_seen=seen, presented=req.presented,
                    )  # fmt: skip
                    if decision.kind is ClaimKind.REFUSED:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return decision
                    record, secret = record_for(req, decision, self.node_id)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(sess, req.peer_id, _encode(record))
                    pipe.hset(self._k("meta", req.room), req.peer_id, json.dumps(req.metadata))
                    await pipe.execute()
                    key = (req.room, req.peer_id)
                    self._local[key] = record
                    self._local_meta[key] = req.metadata
                    self._unreleased.pop(key, None)
                    return attrs.evolve(decision, secret=secret)
                except WatchError:
                    continue

    async def release(self, room: str, peer_id: str, sid: str, now: float) -> None:
        local = self._local.get((room, peer_id))
        if local is None or local.sid != sid:
            return
        key = (room, peer_id)
        del self._local[key]
        self._local_meta.pop(key, None)
        released = attrs.evolve(local, connected=False, since=now)
        try:
            await self._write_release(key, released)
        except Exception:
            self._unreleased[key] = released  # retried by the heartbeat loop until Redis takes it
            raise

    async def _write_release(self, key: tuple[str, str], released: SessionRecord) -> None:
        room, peer_id = key
        await self._release(
            keys=[self._k("sess", room), self._k("meta", room)],
            args=[peer_id, released.sid, _encode(released)],
        )

    async def set_metadata(self, room: str, peer_id: str, sid: str, metadata: Mapping[str, Any]) -> bool:
        keys = [self._k("sess", room), self._k("meta", room)]
        stored = bool(await self._set_meta(keys=keys, args=[peer_id, sid, json.dumps(metadata)]))
        local = self._local.get((room, peer_id))
        if stored and local is not None and local.sid == sid:
            self._local_meta[(room, peer_id)] = metadata
        return stored

    def _is_local_live(self, room: str, peer_id: str, record: SessionRecord) -> bool:
        local = self._local.get((room, peer_id))
        return local is not None and local.sid == record.sid

    async def is_connected(self, room: str, peer_id: str) -> bool:
        record = _decode(await self.redis.hget(self._k("sess", room), peer_id))
        if record is None or not record.connected:
            return False
        if record.node == self.node_id:
            return self._is_local_live(room, peer_id, record)
        now = time.time()
        return self._alive(record.node, await self._last_seen(record.node, now), now)

    async def peers(self, room: str) -> list[PeerView]:
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._peers(keys=[self._k("sess", room), self._k("meta", room)], client=pipe)
            pipe.hgetall(self._nodes_key)
            rows, nodes = await pipe.execute()
        now = time.time()
        alive = {n for n, seen in nodes.items() if self._alive(n, float(seen), now)} | {self.node_id}
        return [
            PeerView(peer_id, record["role"], metadata)
            for peer_id, record, metadata in json.loads(rows)
            if record["connected"]
            and record["node"] in alive
            and (record["node"] != self.node_id or self._local_sid(room, peer_id) == record["sid"])
        ]

    def _local_sid(self, room: str, peer_id: str) -> str | None:
        local = self._local.get((room, peer_id))
        return None if local is None else local.sid
