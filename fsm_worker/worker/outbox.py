"""The worker's one sender: peer messages and metadata updates leave in the order the core produced them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

from fsm_worker.protocol.messages import Message, to_wire
from fsm_worker.shells.signaling import SendResult, SendStatus, SignalingClient

log = logging.getLogger(__name__)


class Outbox:
    """Queues sends and metadata updates; one task carries them out over `signaling`, in order."""

    def __init__(self, signaling: SignalingClient) -> None:
        self.signaling = signaling
        self._queue: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._unreachable: set[str] = set()
        #: Called with the message type of each send the server acknowledged (the tests' kill points).
        self.on_delivered: Callable[[str], None] | None = None

    def start(self) -> None:
        self._pump = asyncio.create_task(self._run(), name="worker-outbox")

    def send(self, to: str, message: Message) -> None:
        self._queue.put_nowait(("send", (to, to_wire(message))))

    def update_metadata(self, metadata: dict[str, Any]) -> None:
        self._queue.put_nowait(("meta", metadata))

    async def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (for at most `timeout` seconds), then stop."""
        self._queue.put_nowait(None)
        if self._pump is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._pump

    async def _run(self) -> None:
        while (item := await self._queue.get()) is not None:
            kind, body = item
            try:
                if kind == "meta":
                    await self.signaling.update_metadata(body)
                    continue
                to, payload = body
                kind = payload["app_message_type"]  # posted, never awaited: one slow ack holds up nothing
                self.signaling.post(to, payload).add_done_callback(
                    functools.partial(self._note_delivered, to, kind)
                )
            except Exception:
                log.exception("sending %s failed", kind)

    def _note_delivered(self, to: str, kind: str, done: asyncio.Future[SendResult]) -> None:
        if done.cancelled() or done.exception() is not None:
            log.warning(
                "%s to %s not delivered: %s", kind, to, "cancelled" if done.cancelled() else done.exception()
            )
            return
        self._note_delivery(to, kind, done.result())

    def _note_delivery(self, to: str, kind: str, result: SendResult) -> None:
        """Warn once when a peer becomes unreachable (its client replays job events with `job_sync` later)."""
        if result.delivered or result.status is SendStatus.QUEUED:
            self._unreachable.discard(to)
            if self.on_delivered is not None:
                self.on_delivered(kind)
        elif to not in self._unreachable:
            self._unreachable.add(to)
            log.warning(
                "%s to %s not delivered: %s %s (further failures to it are not logged)",
                kind,
                to,
                result.code,
                result.message,
            )
