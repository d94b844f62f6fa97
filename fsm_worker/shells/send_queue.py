"""The signaling link's outgoing messages: per destination, ordered, bounded, with an in-flight window. No IO.

The link asks `ready(now)` what to emit, emits it, and reports back `acked`, `unsent` and `link_lost`; the
queues answer each message's future. What socketio does not do for us lives here: the backlog while the link
is down, order per destination, retries for a target that is still reconnecting, and the bounds.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Any

import attrs

from fsm_worker.logfmt import log_event
from fsm_worker.protocol.errors import SignalingCode

log = logging.getLogger("fsm_worker.shells.signaling")

#: How long a destination rests after a retryable refusal or a lost ack.
RETRY_PAUSE = 0.25


class SendStatus(StrEnum):
    """What happened to a sent message."""

    DELIVERED = "delivered"  # the server routed it to the peer
    QUEUED = "queued"  # kept in order; sent after reconnection
    REFUSED = "refused"  # the server (or the link's queue bound) said no (see ``code``); not queued


@attrs.frozen
class SendResult:
    """Outcome of a sent message."""

    status: SendStatus
    code: str | None = None
    message: str | None = None

    @property
    def delivered(self) -> bool:
        """True if the server routed the message."""
        return self.status is SendStatus.DELIVERED


def result_of(ack: Any) -> SendResult:
    """The server's ack of a `peer_message` as a result."""
    if isinstance(ack, dict) and ack.get("ok") is True:
        return SendResult(SendStatus.DELIVERED)
    if isinstance(ack, dict):
        return SendResult(SendStatus.REFUSED, str(ack.get("code")), str(ack.get("message")))
    return SendResult(SendStatus.REFUSED, SignalingCode.INTERNAL_ERROR, f"unexpected ack {ack!r}")


@attrs.define(eq=False)
class Outgoing:
    seq: int
    to_peer_id: str
    payload: dict[str, Any]
    future: asyncio.Future[SendResult]
    queued_at: float
    deferred: bool = False  # waited for the link: a PEER_NOT_FOUND may mean the target is reconnecting
    sent_at: float = 0.0


@attrs.define
class _PeerQueue:
    waiting: list[Outgoing] = attrs.field(factory=list)  # in seq order
    inflight: dict[int, Outgoing] = attrs.field(factory=dict)
    retry_at: float = 0.0
    full_logged: bool = False

    def __len__(self) -> int:
        return len(self.waiting) + len(self.inflight)

    def put_back(self, item: Outgoing) -> None:
        item.deferred = True
        bisect.insort(self.waiting, item, key=lambda i: i.seq)


class SendQueues:
    """One queue per destination; `max_queued` messages at most per destination, `window` of them in flight."""

    def __init__(
        self, owner: str, *, max_queued: int, window: int, queued_peer_wait: float, ack_timeout: float
    ) -> None:
        self.owner = owner
        self.max_queued = max_queued
        self.window = window
        self.queued_peer_wait = queued_peer_wait
        self.ack_timeout = ack_timeout
        self._peers: dict[str, _PeerQueue] = {}
        self._seq = itertools.count()

    @property
    def queued(self) -> int:
        return sum(len(queue) for queue in self._peers.values())

    @property
    def in_flight(self) -> int:
        return sum(len(queue.inflight) for queue in self._peers.values())

    def add(
        self,
        to: str,
        payload: Mapping[str, Any],
        future: asyncio.Future[SendResult],
        now: float,
        link_up: bool,
    ) -> None:
        """Queue a message; a full destination refuses it at once with `QUEUE_FULL` (naming the limit)."""
        queue = self._peers.setdefault(to, _PeerQueue())
        if len(queue) >= self.max_queued:
            if not queue.full_logged:
                queue.full_logged = True
                log_event(log, logging.WARNING, "send_queue_full", peer_id=self.owner, to_peer_id=to,
                          limit=self.max_queued)  # fmt: skip
            text = f"{len(queue)} messages pending for {to} (max_queued_per_peer={self.max_queued})"
            future.set_result(SendResult(SendStatus.REFUSED, SignalingCode.QUEUE_FULL, text))
            return
        queue.waiting.append(Outgoing(next(self._seq), to, dict(payload), future, now, deferred=not link_up))
        if not link_up:  # the spec's "WebSocket not available": an error, never an exception
            log_event(log, logging.ERROR, "send_queued", peer_id=self.owner, to_peer_id=to,
                      reason="not_connected", queued=len(queue))  # fmt: skip

    def ready(self, now: float) -> Iterator[Outgoing]:
        """The messages to emit now, in order per destination; each is in flight once yielded."""
        for queue in list(self._peers.values()):
            self._expire(queue, now)
            while queue.waiting and len(queue.inflight) < self.window and queue.retry_at <= now:
                item = queue.waiting.pop(0)
                item.sent_at = now
                queue.inflight[item.seq] = item
                yield item

    def unsent(self, item: Outgoing) -> None:
        """The emit failed (the link went down): the message waits again in its place."""
        queue = self._peers.get(item.to_peer_id)
        if queue is not None and queue.inflight.pop(item.seq, None) is not None:
            queue.put_back(item)

    def acked(self, item: Outgoing, ack: Any, now: float) -> None:
        queue = self._peers.get(item.to_peer_id)
        if queue is None or queue.inflight.pop(item.seq, None) is None:
            return  # put back by a link drop meanwhile: it is sent again
        result = result_of(ack)
        waited = now - item.queued_at
        if result.code == SignalingCode.RATE_LIMITED:
            queue.put_back(item)  # the server's bucket is empty: sent again shortly, in order
            queue.retry_at = now + RETRY_PAUSE
            if not item.future.done():
                item.future.set_result(SendResult(SendStatus.QUEUED))
            return
        if item.deferred and result.code == SignalingCode.PEER_NOT_FOUND and waited < self.queued_peer_wait:
            queue.put_back(item)  # the target may still be reconnecting
            queue.retry_at = now + RETRY_PAUSE
            return
        if item.deferred and result.status is SendStatus.REFUSED:
            log_event(log, logging.ERROR, "queued_send_refused", peer_id=self.owner,
                      to_peer_id=item.to_peer_id, code=result.code)  # fmt: skip
        if not item.future.done():
            item.future.set_result(result)
        queue.full_logged = queue.full_logged and len(queue) >= self.max_queued // 2
        if not queue:
            del self._peers[item.to_peer_id]

    def link_lost(self) -> None:
        """Unacknowledged messages wait again, in order: they are sent after reconnection."""
        for to, queue in self._peers.items():
            if queue.inflight:
                log_event(log, logging.ERROR, "send_queued", peer_id=self.owner, to_peer_id=to,
                          reason="link_dropped", count=len(queue.inflight))  # fmt: skip
            for item in queue.inflight.values():
                queue.put_back(item)
            queue.inflight.clear()

    def _expire(self, queue: _PeerQueue, now: float) -> None:
        """An ack not back within `ack_timeout` on a live link: the message is sent again."""
        for seq, item in list(queue.inflight.items()):
            if now - item.sent_at >= self.ack_timeout:
                del queue.inflight[seq]
                queue.put_back(item)
                queue.retry_at = now + RETRY_PAUSE
                log_event(log, logging.WARNING, "ack_timeout", peer_id=self.owner, to_peer_id=item.to_peer_id)

    def next_wake(self, now: float) -> float | None:
        """Seconds until a destination may send again or an ack is overdue (None: nothing pending)."""
        times = [q.retry_at for q in self._peers.values() if q.waiting and q.retry_at > now]
        times += [i.sent_at + self.ack_timeout for q in self._peers.values() for i in q.inflight.values()]
        return max(0.01, min(times) - now) if times else None

    def drop_all(self) -> None:
        """Closing: every pending message is answered `QUEUED` (it was never acknowledged)."""
        for queue in self._peers.values():
            for item in [*queue.waiting, *queue.inflight.values()]:
                if not item.future.done():
                    item.future.set_result(SendResult(SendStatus.QUEUED))
        self._peers.clear()
