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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
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
    _redis: aioredis.Redis | None = None
    _node_seen: dict[str, float] = attrs.field(factory=dict)
    _local: dict[tuple[str, str], SessionRecord] = attrs.field(factory=dict)
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
        self._redis = aioredis.Redis.from_url(self.url, decode_responses=True)
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

    async def _beat(self) -> None:
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._nodes_key, self.node_id, repr(now))
            pipe.hgetall(self._nodes_key)
            _, nodes = await pipe.execute()
        self._node_seen = {k: float(v) for k, v in nodes.items()}

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.node_ttl / 4)
            try:
                await self._beat()
            except Exception as exc:
                log_event(log, logging.ERROR, "heartbeat_failed", node=self.node_id, error=repr(exc))

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
                        node_last_seen=seen,
                    )  # fmt: skip
                    if decision.kind is ClaimKind.REFUSED:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return decision
                    record = SessionRecord(
                        sid=req.sid, node=self.node_id, role=req.role, secret_hash=req.secret_hash
                    )
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(sess, req.peer_id, _encode(record))
                    pipe.hset(self._k("meta", req.room), req.peer_id, json.dumps(req.metadata))
                    await pipe.execute()
                    self._local[(req.room, req.peer_id)] = record
                    return decision
                except WatchError:
                    continue

    async def release(self, room: str, peer_id: str, sid: str, now: float) -> None:
        local = self._local.get((room, peer_id))
        if local is None or local.sid != sid:
            return
        del self._local[(room, peer_id)]
        released = _encode(attrs.evolve(local, connected=False, since=now))
        await self._release(
            keys=[self._k("sess", room), self._k("meta", room)], args=[peer_id, sid, released]
        )

    async def set_metadata(self, room: str, peer_id: str, sid: str, metadata: Mapping[str, Any]) -> bool:
        keys = [self._k("sess", room), self._k("meta", room)]
        return bool(await self._set_meta(keys=keys, args=[peer_id, sid, json.dumps(metadata)]))

    async def is_connected(self, room: str, peer_id: str) -> bool:
        record = _decode(await self.redis.hget(self._k("sess", room), peer_id))
        if record is None or not record.connected:
            return False
        if record.node == self.node_id:
            return True
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
            if record["connected"] and record["node"] in alive
        ]
