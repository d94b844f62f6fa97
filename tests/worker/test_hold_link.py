"""The worker's hold link (worker/holds.py) against a real in-process server: claims answered, in order."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import cast

from support.signaling import DEFAULT_TIMEOUT, loopback_config

from fsm_worker.protocol.signaling import room_for_token
from fsm_worker.protocol.worker import events as core
from fsm_worker.server.app import start_server
from fsm_worker.shells.signaling import SignalingClient
from fsm_worker.worker.holds import HoldLink


async def _worker(url: str, token: str) -> SignalingClient:
    worker = SignalingClient(url, token, "w1", "worker")
    await worker.connect(timeout=DEFAULT_TIMEOUT)
    return worker


async def _answers(fed: list[core.Event], n: int) -> list[core.Event]:
    async with asyncio.timeout(DEFAULT_TIMEOUT):
        while len(fed) < n:
            await asyncio.sleep(0.01)
    return fed


async def test_claims_are_granted_then_refused_naming_the_cap_and_releases_free_them() -> None:
    token = secrets.token_hex(16)
    running = await start_server(loopback_config([token], max_holds_per_client=1))
    try:
        worker = await _worker(running.url, token)
        fed: list[core.Event] = []
        link = HoldLink(worker, fed.append)
        link.put(core.ClaimHold("greedy", "job-1"))
        link.put(core.ClaimHold("greedy", "job-2"))
        link.put(core.ReleaseHold("greedy", "job-1"))
        link.put(core.ClaimHold("greedy", "job-3"))
        answers = {getattr(event, "job_id", None): event for event in await _answers(fed, 3)}
        assert answers["job-1"] == core.HoldGranted("job-1")
        refused = answers["job-2"]
        assert isinstance(refused, core.HoldRefused) and "max_holds_per_client (1)" in refused.message
        assert answers["job-3"] == core.HoldGranted("job-3"), "the release went out before the next claim"
        link.put(core.SyncHolds(()))
        await link.close()
        await worker.close()
        book = running.server.holds
        assert book is not None
        assert await book.count(room_for_token(token), "greedy", 0.0) == 0
    finally:
        await running.stop()


async def test_without_holds_offered_or_without_a_link_a_claim_is_a_degraded_grant() -> None:
    token = secrets.token_hex(16)
    running = await start_server(loopback_config([token], max_holds_per_client=0))
    try:
        worker = await _worker(running.url, token)
        fed: list[core.Event] = []
        link = HoldLink(worker, fed.append)
        link.put(core.ClaimHold("c", "job-1"))
        link.put(core.ReleaseHold("c", "job-1"))  # not sent: the server does not count holds
        assert await _answers(fed, 1) == [core.HoldUnanswered("job-1", "the server does not count holds")]
        worker.holds_offered = True  # as if offered, but the link is gone: still taken, degraded
        await worker.close()
        link.put(core.ClaimHold("c", "job-2"))
        assert isinstance((await _answers(fed, 2))[1], core.HoldUnanswered)
        await link.close()
    finally:
        await running.stop()


class _StalledServer:
    """A link whose server never answers the first claim (it was sent); every later op is answered at once."""

    holds_offered = True

    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []

    async def hold(
        self, request: dict[str, object], on_sent: Callable[[], None] | None = None
    ) -> dict[str, object]:
        self.sent.append(request)
        if on_sent is not None:
            on_sent()
        if len(self.sent) == 1:
            await asyncio.Event().wait()  # no ack, ever
        return {"ok": True, "held": 1}


async def test_an_unanswered_claim_holds_up_no_later_op() -> None:
    server = _StalledServer()
    fed: list[core.Event] = []
    link = HoldLink(cast(SignalingClient, server), fed.append)
    link.put(core.ClaimHold("a", "job-1"))
    link.put(core.ClaimHold("b", "job-2"))
    link.put(core.ReleaseHold("b", "job-2"))
    assert await _answers(fed, 1) == [core.HoldGranted("job-2")]
    await link.close(timeout=0.2)  # the stalled one is given up
    assert [request.get("job_ref") for request in server.sent] == [
        core.ClaimHold("a", "job-1").job_ref, core.ClaimHold("b", "job-2").job_ref,
        core.ReleaseHold("b", "job-2").job_ref,
    ]  # fmt: skip
