"""The room-wide hold cap in Redis (issue 10 item 8): one count per client shared by every server node.

Keys (``{ns}`` is the key prefix, as in `redis_registry.py`):

- ``{ns}:holds:{room}:{client}`` hash: ``worker \\n job_ref`` → worker id (the holds counted for the client);
- ``{ns}:wholds:{room}:{worker}`` hash: job_ref → client (what one worker claimed, for its cap, releases, syncs).

Each op is one Lua script (atomic). A claim first drops the client's holds whose worker the registry no longer
has: no session record, another role, or gone longer than `resume_grace` (disconnected since then, or on a
node whose heartbeat is older than `node_ttl`: counted from its last heartbeat, as the registry does). So a
dead node's or departed worker's holds stop counting within `node_ttl` + `resume_grace`.
"""

from __future__ import annotations

from typing import Any

import attrs

from fsm_worker.protocol.errors import SignalingCode, SignalingRefusal
from fsm_worker.protocol.signaling import HoldClaim
from fsm_worker.server.redis_registry import RedisRegistry

# ARGV[1..5]: prefix, room, now, grace, node_ttl. Drops the client's holds (KEYS[1]) of gone workers.
_PRUNE = """
local function pkey(kind, id) return ARGV[1] .. ':' .. kind .. ':' .. ARGV[2] .. ':' .. id end
local now, grace, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local function gone(worker)
  local s = redis.call('HGET', ARGV[1] .. ':sess:' .. ARGV[2], worker)
  if not s then return true end
  local r = cjson.decode(s)
  if r['role'] ~= 'worker' then return true end
  local since = r['since']
  if r['connected'] then
    local seen = redis.call('HGET', ARGV[1] .. ':nodes', r['node'])
    if seen and tonumber(seen) + ttl >= now then return false end
    since = seen and tonumber(seen) or 0
  end
  return since + grace < now
end
local held = redis.call('HGETALL', KEYS[1])
for i = 1, #held, 2 do
  if gone(held[i + 1]) then
    redis.call('HDEL', KEYS[1], held[i])
    local ref = string.sub(held[i], #held[i + 1] + 2)
    redis.call('HDEL', pkey('wholds', held[i + 1]), ref)
  end
end
"""
# KEYS: client holds, worker holds. ARGV[6..]: worker, job_ref, client, cap, worker cap.
_CLAIM = (
    _PRUNE
    + """
local worker, ref, client = ARGV[6], ARGV[7], ARGV[8]
local cap, wcap = tonumber(ARGV[9]), tonumber(ARGV[10])
local field = worker .. '\\n' .. ref
if redis.call('HGET', KEYS[2], ref) == client and redis.call('HEXISTS', KEYS[1], field) == 1 then
  return redis.call('HLEN', KEYS[1])
end
local count = redis.call('HLEN', KEYS[1])
if cap > 0 and count >= cap then return -1 end
local old = redis.call('HGET', KEYS[2], ref)
if not old and redis.call('HLEN', KEYS[2]) >= wcap then return -2 end
if old then redis.call('HDEL', pkey('holds', old), field) end
redis.call('HSET', KEYS[2], ref, client)
redis.call('HSET', KEYS[1], field, worker)
return count + 1
"""
)
_COUNT = _PRUNE + "return redis.call('HLEN', KEYS[1])"
# KEYS: worker holds. ARGV: prefix, room, worker, job_ref.
_RELEASE = """
local client = redis.call('HGET', KEYS[1], ARGV[4])
if not client then return 0 end
redis.call('HDEL', KEYS[1], ARGV[4])
redis.call('HDEL', ARGV[1] .. ':holds:' .. ARGV[2] .. ':' .. client, ARGV[3] .. '\\n' .. ARGV[4])
return 1
"""
# KEYS: worker holds. ARGV: prefix, room, worker, then client, job_ref pairs: replaces the worker's set.
_SYNC = """
local function ckey(client) return ARGV[1] .. ':holds:' .. ARGV[2] .. ':' .. client end
local old = redis.call('HGETALL', KEYS[1])
for i = 1, #old, 2 do redis.call('HDEL', ckey(old[i + 1]), ARGV[3] .. '\\n' .. old[i]) end
redis.call('DEL', KEYS[1])
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i + 1], ARGV[i])
  redis.call('HSET', ckey(ARGV[i]), ARGV[3] .. '\\n' .. ARGV[i + 1], ARGV[3])
end
return 1
"""


@attrs.define
class RedisHolds:
    """The holds of every node's workers, in the Redis the `registry` uses."""

    registry: RedisRegistry
    max_per_client: int
    max_per_worker: int
    _scripts: dict[str, Any] = attrs.field(factory=dict)

    def _script(self, name: str, source: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self.registry.redis.register_script(source)
        return self._scripts[name]

    def _keys(self, room: str, kind: str, peer: str) -> str:
        return f"{self.registry.prefix}:{kind}:{room}:{peer}"

    def _prune_args(self, room: str, now: float) -> list[Any]:
        return [
            self.registry.prefix,
            room,
            repr(now),
            repr(self.registry.grace),
            repr(self.registry.node_ttl),
        ]

    async def count(self, room: str, client: str, now: float) -> int:
        keys = [self._keys(room, "holds", client)]
        return int(await self._script("count", _COUNT)(keys=keys, args=self._prune_args(room, now)))

    async def claim(self, room: str, worker: str, client: str, job_ref: str, now: float) -> int:
        keys = [self._keys(room, "holds", client), self._keys(room, "wholds", worker)]
        args = [
            *self._prune_args(room, now),
            worker,
            job_ref,
            client,
            self.max_per_client,
            self.max_per_worker,
        ]
        held = int(await self._script("claim", _CLAIM)(keys=keys, args=args))
        if held == -1:
            raise SignalingRefusal(
                SignalingCode.HOLD_LIMIT,
                f"client {client!r} holds max_holds_per_client ({self.max_per_client}) jobs in the room",
            )
        if held == -2:
            raise SignalingRefusal(
                SignalingCode.HOLD_LIMIT,
                f"this worker holds max_holds_per_worker ({self.max_per_worker}) jobs",
            )
        return held

    async def release(self, room: str, worker: str, job_ref: str) -> None:
        keys = [self._keys(room, "wholds", worker)]
        await self._script("release", _RELEASE)(keys=keys, args=[self.registry.prefix, room, worker, job_ref])

    async def sync(self, room: str, worker: str, holds: tuple[HoldClaim, ...]) -> None:
        pairs = [value for hold in holds for value in (hold.client, hold.job_ref)]
        keys = [self._keys(room, "wholds", worker)]
        await self._script("sync", _SYNC)(keys=keys, args=[self.registry.prefix, room, worker, *pairs])

    def worker_left(self, room: str, worker: str, now: float) -> None:
        """Nothing to do: whether a worker still counts is read from the registry at each claim."""

    def worker_back(self, room: str, worker: str) -> None:
        """Nothing to do (as `worker_left`)."""
