"""The worker's side of the room-wide hold cap (issue 10 item 8): carries the core's hold instructions to the
signaling server (`hold` op, docs/signaling.md) and feeds the answers back.

One task emits them in the core's order (a release never overtakes its claim: the server handles one
connection's events in arrival order); acks are awaited concurrently, so a slow answer holds up no later op
(each waits at most the link's ack timeout). A claim's answer becomes
`HoldGranted` or, when the server refuses it `HOLD_LIMIT`, `HoldRefused`; any other failure (link down, no
answer within the link's ack timeout, a server without holds) is fed as `HoldUnanswered`, and the core decides
(it takes the job: availability over strictness). Releases and syncs are not answered; one that cannot be
sent is repaired by the sync of the next (re)connect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fsm_worker.protocol.errors import SignalingCode
from fsm_worker.protocol.worker import events as core
from fsm_worker.protocol.worker.hold_events import hold_ref
from fsm_worker.shells.signaling import SignalingClient, SignalingError

log = logging.getLogger(__name__)

HoldInstruction = core.ClaimHold | core.ReleaseHold | core.SyncHolds


class HoldLink:
    """Sends hold instructions over `signaling`, in order; `feed` takes the answers (core events)."""

    def __init__(self, signaling: SignalingClient, feed: Callable[[core.Event], None]) -> None:
        self.signaling = signaling
        self._feed = feed
        self._queue: asyncio.Queue[HoldInstruction | None] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._waiting: set[asyncio.Task[None]] = set()  # ops sent, their acks awaited

    def put(self, instruction: HoldInstruction) -> None:
        if self._pump is None:
            self._pump = asyncio.create_task(self._run(), name="worker-holds")
        self._queue.put_nowait(instruction)

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is queued and wait for the answers (for at most `timeout` seconds), then stop."""
        if self._pump is None:
            return
        self._queue.put_nowait(None)
        try:
            async with asyncio.timeout(timeout):
                await self._pump
                if self._waiting:
                    await asyncio.gather(*self._waiting)
        except TimeoutError:
            for task in [self._pump, *self._waiting]:
                task.cancel()
            await asyncio.gather(self._pump, *self._waiting, return_exceptions=True)

    async def _run(self) -> None:
        while (item := await self._queue.get()) is not None:
            sent = asyncio.Event()
            task = asyncio.create_task(self._carry(item, sent.set), name="worker-hold-op")
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)
            # the next op is emitted only once this one left (or failed before it could)
            waiter = asyncio.create_task(sent.wait())
            await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    async def _carry(self, item: HoldInstruction, on_sent: Callable[[], None]) -> None:
        try:
            await self._send(item, on_sent)
        except Exception:
            log.exception("hold op %r failed", item)

    async def _send(self, item: HoldInstruction, on_sent: Callable[[], None]) -> None:
        offered = self.signaling.holds_offered
        if isinstance(item, core.ClaimHold):
            if not offered:
                self._feed(core.HoldUnanswered(item.job_id, "the server does not count holds"))
                return
            self._feed(await self._claim(item, on_sent))
        elif not offered:
            return
        elif isinstance(item, core.ReleaseHold):
            await self._quiet({"client": item.client_id, "job_ref": item.job_ref, "held": False}, on_sent)
        else:
            holds = [{"client": client, "job_ref": hold_ref(job_id)} for client, job_id in item.holds]
            await self._quiet({"sync": holds}, on_sent)

    async def _claim(self, item: core.ClaimHold, on_sent: Callable[[], None]) -> core.Event:
        try:
            await self.signaling.hold(
                {"client": item.client_id, "job_ref": item.job_ref, "held": True}, on_sent
            )
        except SignalingError as exc:
            if exc.code == SignalingCode.HOLD_LIMIT:
                return core.HoldRefused(item.job_id, exc.message)
            return core.HoldUnanswered(item.job_id, str(exc))
        return core.HoldGranted(item.job_id)

    async def _quiet(self, request: dict[str, object], on_sent: Callable[[], None]) -> None:
        try:
            await self.signaling.hold(request, on_sent)
        except SignalingError as exc:
            log.warning("hold op not carried out (%s); the next connect re-syncs the holds", exc)
