"""Sends of one job, in order per peer, each reporting what the signaling server did with it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fsm_worker.protocol.client.events import SendReported
from fsm_worker.protocol.messages import Message
from fsm_worker.shells.signaling import SendResult, SendStatus

log = logging.getLogger(__name__)

SendFn = Callable[[str, Message], Awaitable[SendResult]]


class Outbox:
    """Runs sends as tasks: concurrent across peers, in order to one peer; every send ends in a report."""

    def __init__(self, send: SendFn, report: Callable[[SendReported], None]) -> None:
        self._send, self._report = send, report
        self._tails: dict[str, asyncio.Task[None]] = {}

    def send(self, to: str, message: Message) -> None:
        previous = self._tails.get(to)
        task = asyncio.get_running_loop().create_task(self._after(previous, to, message))
        self._tails[to] = task
        task.add_done_callback(
            lambda done: self._tails.pop(to, None) if self._tails.get(to) is done else None
        )

    async def flush(self) -> None:
        """Wait until every send started so far has been answered."""
        while self._tails:
            await asyncio.wait(list(self._tails.values()))

    async def _after(self, previous: asyncio.Task[None] | None, to: str, message: Message) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        try:
            result = await self._send(to, message)
        except Exception as error:  # the link is closed or broken: the core hears it as a refusal
            log.info("sending %s to %s failed: %s", message.TYPE, to, error)
            self._report(SendReported(to, message, refused=True, code=type(error).__name__))
            return
        self._report(SendReported(to, message, result.status is SendStatus.REFUSED, result.code))
