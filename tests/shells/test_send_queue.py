"""The signaling link's send queues, without a socket: order, window, bounds, retries, link loss."""

from __future__ import annotations

import asyncio

import pytest

from fsm_worker.protocol.errors import SignalingCode
from fsm_worker.shells.send_queue import SendQueues, SendResult, SendStatus

OK = {"ok": True}
GONE = {"ok": False, "code": "PEER_NOT_FOUND", "message": "no such peer"}


@pytest.fixture
def queues() -> SendQueues:
    return SendQueues("w1", max_queued=5, window=2, queued_peer_wait=30.0, ack_timeout=5.0)


def _add(
    queues: SendQueues, to: str, i: int, now: float = 0.0, up: bool = True
) -> asyncio.Future[SendResult]:
    future: asyncio.Future[SendResult] = asyncio.get_running_loop().create_future()
    queues.add(to, {"i": i}, future, now, up)
    return future


async def test_order_per_destination_within_the_window(queues: SendQueues) -> None:
    futures = [_add(queues, "c1", i) for i in range(4)] + [_add(queues, "c2", 9)]
    sent = list(queues.ready(0.0))
    assert [(item.to_peer_id, item.payload["i"]) for item in sent] == [("c1", 0), ("c1", 1), ("c2", 9)]
    assert queues.in_flight == 3 and queues.queued == 5
    queues.acked(sent[0], OK, 0.1)
    assert futures[0].result().delivered and not futures[1].done()
    assert [item.payload["i"] for item in queues.ready(0.1)] == [2]  # the window refills in order


async def test_a_full_destination_refuses_at_once_and_others_are_unaffected(queues: SendQueues) -> None:
    for i in range(5):
        _add(queues, "flooder", i)
    refused = _add(queues, "flooder", 5)
    assert refused.result().status is SendStatus.REFUSED and refused.result().code == SignalingCode.QUEUE_FULL
    assert "max_queued_per_peer=5" in str(refused.result().message)
    other = _add(queues, "c1", 0)
    assert not other.done() and queues.queued == 6


async def test_a_message_that_waited_for_the_link_retries_a_peer_still_reconnecting(
    queues: SendQueues,
) -> None:
    queued = _add(queues, "c1", 0, up=False)
    direct = _add(queues, "c2", 0, up=True)
    first, second = list(queues.ready(1.0))
    queues.acked(first, GONE, 1.0)
    queues.acked(second, GONE, 1.0)
    assert direct.result().code == "PEER_NOT_FOUND"  # sent while up: refused at once
    assert not queued.done() and list(queues.ready(1.0)) == []  # waits a little, then again
    [again] = list(queues.ready(1.5))
    queues.acked(again, OK, 1.5)
    assert queued.result().delivered
    late = _add(queues, "c3", 0, now=0.0, up=False)
    [item] = list(queues.ready(31.0))
    queues.acked(item, GONE, 31.0)  # past queued_peer_wait: the refusal stands
    assert late.result().code == "PEER_NOT_FOUND"


async def test_a_lost_link_puts_unacknowledged_messages_back_in_order(queues: SendQueues) -> None:
    futures = [_add(queues, "c1", i) for i in range(3)]
    sent = list(queues.ready(0.0))
    queues.link_lost()
    assert queues.in_flight == 0 and queues.queued == 3
    queues.acked(sent[0], OK, 0.1)  # a stale ack after the drop changes nothing
    assert not futures[0].done()
    assert [item.payload["i"] for item in queues.ready(0.2)] == [0, 1]


async def test_an_overdue_ack_is_sent_again_and_closing_answers_queued(queues: SendQueues) -> None:
    future = _add(queues, "c1", 0)
    [item] = list(queues.ready(0.0))
    assert queues.next_wake(0.0) == pytest.approx(5.0)
    assert list(queues.ready(5.0)) == [] and queues.in_flight == 0  # expired, resting before the resend
    assert [again.seq for again in queues.ready(5.3)] == [item.seq]
    queues.drop_all()
    assert future.result().status is SendStatus.QUEUED and queues.queued == 0
