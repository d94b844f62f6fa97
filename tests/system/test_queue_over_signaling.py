"""Issue 12's queue end to end at the wire: a real server, a real worker host (one slot) running a real job,
and raw peers that queue behind it, hear their place move, cancel, and lose a place they do not keep alive."""

from __future__ import annotations

from typing import Any

from rooms import Room, advertised
from support.job_keys import keyed, keyed_request

from fsm_worker.protocol.messages import JobStatus


def request(job_id: str, **extra: Any) -> dict[str, Any]:
    """A keyed request (a worker requires a per-job key by default); its client's later messages are `keyed`."""
    return keyed_request(job_id, "train-demo", **extra)


async def test_queued_places_move_up_on_cancel_and_expire_without_job_sync(room: Room) -> None:
    await room.worker(queue_lease=3.0)
    runner = await room.client("runner")
    job = await runner.submit("long-ticker")  # holds the only slot
    async for event in job.events():
        if isinstance(event, JobStatus) and event.status == "running":
            break
    bob, bob_inbox = await room.peer("bob")
    carol, carol_inbox = await room.peer("carol")

    assert (await bob.send("worker-1", request("b"))).delivered  # no queue asked: today's refusal
    assert (await bob_inbox.next_of("job_response"))["reason"] == "busy"
    for peer, inbox, job_id, place in ((bob, bob_inbox, "b", 1), (carol, carol_inbox, "c", 2)):
        assert (await peer.send("worker-1", request(job_id, queue=True))).delivered
        reply = await inbox.next_of("job_response")
        assert (reply["accepted"], reply["queued"], reply["queue_position"]) == (True, True, place)
        assert (await peer.send("worker-1", keyed("job_assignment", job_id))).delivered
    props = await advertised(bob, "worker-1")
    assert (props["status"], props["queue_length"], props["free_slots"]) == ("busy", 2, 0)

    assert (await bob.send("worker-1", keyed("job_cancel", "b"))).delivered
    assert (await bob_inbox.next_of("job_cancelled"))["job_id"] == "b"
    moved = await carol_inbox.next_of("job_status")
    assert (moved["status"], moved["queue_position"], moved.get("seq")) == ("queued", 1, None)

    # carol never sends job_sync: her place lapses after queue_lease
    failed = await carol_inbox.next_of("job_failed", timeout=10.0)
    assert (failed["job_id"], failed["error"]["code"]) == ("c", "QUEUE_LEASE_EXPIRED")
    assert (await advertised(bob, "worker-1"))["queue_length"] == 0
    await job.cancel()


async def test_a_queued_job_takes_the_slot_its_predecessor_frees(room: Room) -> None:
    await room.worker(first_input_timeout=1.0)
    runner = await room.client("runner")
    job = await runner.submit("long-ticker")
    dave, inbox = await room.peer("dave")
    assert (await dave.send("worker-1", request("d", queue=True))).delivered
    assert (await inbox.next_of("job_response"))["queued"] is True
    assert (await dave.send("worker-1", keyed("job_assignment", "d"))).delivered
    await job.cancel()  # the slot frees: d leaves the queue and waits for its inputs, which never come
    failed = await inbox.next_of("job_failed", timeout=10.0)
    assert (failed["job_id"], failed["error"]["code"], failed["seq"]) == ("d", "FIRST_INPUT_TIMEOUT", 1)
