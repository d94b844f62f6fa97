"""The spec's scenarios end to end: a real server, a real worker host, and a raw peer speaking the protocol."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from rooms import Room, advertised, eventually
from support.job_keys import keyed, keyed_request

from fsm_worker.protocol.worker.states import WorkerStatus
from fsm_worker.shells.rtc.config import make_configuration
from fsm_worker.shells.rtc.session import accept_answer, create_offer, wait_channel_open


def request(job_id: str = "job-1", **extra: Any) -> dict[str, Any]:
    """A keyed request (a worker requires a per-job key by default); its client's later messages are `keyed`."""
    return keyed_request(job_id, "train-demo", **extra)


async def test_accept_compatible_job_when_available(room: Room) -> None:
    worker = await room.worker()
    client, inbox = await room.peer("client-a")
    found = await client.discover(
        {"role": "worker", "properties": {"status": "available", "gpu_memory_mb": {"$gte": 8192}}}
    )
    assert [peer["peer_id"] for peer in found] == ["worker-1"]

    assert (await client.send("worker-1", request(config={"epochs": 10}))).delivered
    sender, reply = await inbox.next()
    assert sender == "worker-1"
    assert reply == {
        "app_message_type": "job_response",
        "job_id": "job-1",
        "accepted": True,
        "estimated_duration_minutes": reply["estimated_duration_minutes"],
    }
    assert reply["estimated_duration_minutes"] > 0
    assert worker.status is WorkerStatus.RESERVED and worker.core.pending_job_id == "job-1"
    props = await advertised(client, "worker-1")
    assert (props["status"], props["free_slots"], props["slots"]) == ("reserved", 0, 1)
    assert "job_id" not in props  # issue 10: no job id in discovery metadata
    assert await client.discover({"properties": {"status": "available"}}) == []


async def test_reject_job_when_busy(room: Room) -> None:
    await room.worker()
    first, first_inbox = await room.peer("client-a")
    second, second_inbox = await room.peer("client-b")
    await first.send("worker-1", request())
    await first_inbox.next()
    await first.send("worker-1", keyed("job_assignment", "job-1"))
    await eventually(lambda: _status_is(second, "busy"))
    await second.send("worker-1", request("job-2"))
    _, reply = await second_inbox.next()
    assert reply == {
        "app_message_type": "job_response",
        "job_id": "job-2",
        "accepted": False,
        "reason": "busy",
    }
    assert (await advertised(second, "worker-1"))["status"] == "busy"  # and no job id published (issue 10)


async def test_reject_incompatible_job(room: Room, caplog: pytest.LogCaptureFixture) -> None:
    worker = await room.worker()
    client, inbox = await room.peer("client-a")
    with caplog.at_level(logging.INFO):
        await client.send("worker-1", request(requirements={"min_gpu_memory_mb": 16384}))
        _, reply = await inbox.next()
    assert (reply["accepted"], reply["reason"]) == (False, "incompatible")
    assert reply["details"] == ["needs 16384 MB of GPU memory, this worker has 8192 MB"]
    assert "needs 16384 MB" in caplog.text and worker.status is WorkerStatus.AVAILABLE


async def test_store_job_assignment_details(room: Room, caplog: pytest.LogCaptureFixture) -> None:
    worker = await room.worker()
    client, inbox = await room.peer("client-a")
    await client.send("worker-1", request())
    await inbox.next()
    with caplog.at_level(logging.INFO):
        await client.send("worker-1", keyed("job_assignment", "job-1"))
        await eventually(lambda: _status_is(client, "busy"))
    job = worker.core.current_job
    assert job is not None and (job.job_id, job.client_id) == ("job-1", "client-a") and job.assigned_at > 0
    assert "Job assigned and ready for WebRTC connection" in caplog.text


async def test_cancel_active_job(room: Room) -> None:
    await room.worker()
    client, inbox = await room.peer("client-a")
    await client.send("worker-1", request())
    await inbox.next()
    await client.send("worker-1", keyed("job_assignment", "job-1"))
    await client.send("worker-1", keyed("job_cancel", "job-1"))
    _, ack = await inbox.next()
    assert ack == {
        "app_message_type": "job_cancelled",
        "job_id": "job-1",
        "status": "cancelled",
        "cleanup_complete": True,
        "seq": 1,
    }
    props = await advertised(client, "worker-1")
    assert props["status"] == "available" and "job_id" not in props  # job ids are cleared, not left stale


async def test_cancel_non_existent_job(room: Room) -> None:
    worker = await room.worker()
    client, inbox = await room.peer("client-a")
    await client.send("worker-1", request())
    await inbox.next()
    await client.send("worker-1", {"app_message_type": "job_cancel", "job_id": "job-404"})
    await client.send("worker-1", request())  # the next reply must be this one: the cancel got none
    _, reply = await inbox.next()
    assert reply["app_message_type"] == "job_response" and worker.status is WorkerStatus.RESERVED


async def test_unhandled_peer_message_type_and_malformed_payloads(
    room: Room, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await room.worker()
    client, inbox = await room.peer("client-a")
    with caplog.at_level(logging.WARNING):
        await client.send("worker-1", {"app_message_type": "make_coffee"})
        await client.send(
            "worker-1", {"app_message_type": "job_request", "job_id": 42, "job_type": "train-demo"}
        )
        _, error = await inbox.next()
    assert error == {
        "app_message_type": "app_error",
        "code": "INVALID_MESSAGE",
        "message": "job_id: expected str, got int",
        "job_id": None,
    }
    assert "make_coffee" in caplog.text and worker.status is WorkerStatus.AVAILABLE


async def test_spoofed_sender_cannot_assign_or_cancel(room: Room) -> None:
    worker = await room.worker()
    owner, owner_inbox = await room.peer("client-a")
    mallory, mallory_inbox = await room.peer("mallory")
    await owner.send("worker-1", request())
    await owner_inbox.next()
    spoof = {"from_peer_id": "client-a", "sender": "client-a"}
    await mallory.send("worker-1", {"app_message_type": "job_assignment", "job_id": "job-1", **spoof})
    _, error = await mallory_inbox.next()
    assert error["code"] == "INVALID_ASSIGNMENT"
    await mallory.send("worker-1", {"app_message_type": "job_cancel", "job_id": "job-1", **spoof})
    await mallory.send(
        "worker-1", {"app_message_type": "rtc_offer", "job_id": "job-1", "sdp": "v=0", **spoof}
    )
    _, refused = await mallory_inbox.next()
    assert refused["code"] == "NOT_ASSIGNED"
    assert worker.status is WorkerStatus.RESERVED and worker.core.reservation is not None
    assert worker.core.reservation.client_id == "client-a"


async def test_reservation_lease_expires_over_the_wire(room: Room) -> None:
    await room.worker(reservation_timeout=0.3)
    client, inbox = await room.peer("client-a")
    await client.send("worker-1", request())
    await inbox.next()
    _, expired = await inbox.next()
    assert expired == {"app_message_type": "reservation_expired", "job_id": "job-1"}
    await eventually(lambda: _status_is(client, "available"))


async def test_websocket_not_available_messages_are_queued_and_delivered(
    room: Room, caplog: pytest.LogCaptureFixture
) -> None:
    """The spec's "WebSocket not available": sending while disconnected logs an error, never raises, and the
    message is delivered after the reconnection (here: a reservation that expires while the server is down)."""
    worker = await room.worker(reservation_timeout=0.5)
    client, inbox = await room.peer("client-a")
    await client.send("worker-1", request())
    await inbox.next()
    with caplog.at_level(logging.ERROR):
        await room.stop_server()
        await eventually(lambda: _async(not worker.signaling.connected))
        await eventually(
            lambda: _async(worker.status is WorkerStatus.AVAILABLE)
        )  # the lease ran out meanwhile
        await room.start_server()
        _, expired = await inbox.next()
    assert expired == {"app_message_type": "reservation_expired", "job_id": "job-1"}
    assert worker.signaling.connected and worker.peer_id == "worker-1"
    await eventually(lambda: _status_is(client, "available"))
    assert any(record.levelno >= logging.ERROR for record in caplog.records)


async def _status_is(peer: Any, status: str) -> bool:
    try:
        return bool((await advertised(peer, "worker-1"))["status"] == status)
    except ValueError:
        return False


async def _async(value: bool) -> bool:
    return value


async def test_an_offer_delivered_twice_is_answered_once(
    room: Room, caplog: pytest.LogCaptureFixture
) -> None:
    """Signaling delivers at least once: a repeated rtc_offer must not replace the connection it created."""
    await room.worker()
    client, inbox = await room.peer("client-a")
    await client.send("worker-1", request())
    await inbox.next()
    await client.send("worker-1", keyed("job_assignment", "job-1"))
    pc = RTCPeerConnection(make_configuration())
    try:
        channel, sdp = await create_offer(pc)
        offer = keyed("rtc_offer", "job-1", sdp=sdp)
        with caplog.at_level(logging.INFO):
            await client.send("worker-1", offer)
            await client.send("worker-1", offer)
            # the worker handles one peer's messages in order: its reply to this comes after both offers were handled
            await client.send("worker-1", {"app_message_type": "job_sync", "job_id": "no-such-job"})
            replies = {}
            for _ in range(2):  # the answer (made asynchronously) and the barrier's error, in either order
                _, payload = await inbox.next()
                replies[payload["app_message_type"]] = payload
        assert set(replies) == {"rtc_answer", "app_error"}
        assert "repeated rtc_offer for job job-1 ignored" in caplog.text
        await accept_answer(pc, replies["rtc_answer"]["sdp"])
        await wait_channel_open(pc, channel, timeout=10)  # the answered connection is still the worker's
    finally:
        await pc.close()
