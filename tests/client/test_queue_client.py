"""The client's queue (issue 12) through its shell: which workers are asked, the bid over a real signaling
server (raw worker peers answering by hand), and what `status` and the progress line show."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from rich.console import Console
from rooms import TIMEOUT, Inbox, Room

from fsm_worker.cli import status_table
from fsm_worker.client import WorkerInfo
from fsm_worker.progress import JobProgress, format_queued
from fsm_worker.protocol.messages import JobStatus, Requirements
from fsm_worker.shells.signaling import SignalingClient


def props(status: str, slots: int, free: int, queue_length: int = 0, queue_free: int = 16) -> dict[str, Any]:
    return {
        "status": status,
        "gpu_model": "fake",
        "gpu_memory_mb": 8192 if free else 0,
        "supported_job_types": ["ticker"],
        "slots": slots,
        "free_slots": free,
        "queue_length": queue_length,
        "queue_free": queue_free,
        "max_concurrent_jobs": slots,
    }


async def raw_worker(room: Room, peer_id: str, properties: dict[str, Any]) -> tuple[SignalingClient, Inbox]:
    inbox = Inbox()
    peer = SignalingClient(
        room.url,
        room.token,
        peer_id,
        role="worker",
        metadata={"properties": properties},
        on_peer_message=inbox,
    )
    await peer.connect(timeout=TIMEOUT)
    room.closers.append(peer.close)
    return peer, inbox


def test_worker_info_reads_slots_queue_and_gpus_and_defaults_for_an_older_worker() -> None:
    old = WorkerInfo("old", {"status": "available", "gpu_memory_mb": 8192})
    assert (old.slots, old.free_slots, old.queue_length, old.queue_size, old.running, old.gpus) == (
        1,
        1,
        0,
        0,
        0,
        [],
    )
    slots = [
        {"index": 0, "gpus": [0, 1], "memory_mb": 8000, "state": "busy"},
        {"index": 1, "gpus": [2], "memory_mb": 8000, "state": "available"},
    ]
    new = WorkerInfo(
        "new",
        props("available", 2, 1, queue_length=3, queue_free=13),
        {"slots": slots, "queue": {"length": 3, "size": 16}, "running": 1},
    )
    assert (new.slots, new.free_slots, new.queue_length, new.queue_size, new.running, new.gpus) == (
        2,
        1,
        3,
        16,
        1,
        [0, 1, 2],
    )


def test_status_shows_gpus_slots_running_and_queued() -> None:
    workers = [
        WorkerInfo(
            "gpu-box",
            props("busy", 4, 0, queue_length=5, queue_free=11),
            {"slots": [{"index": i, "gpus": [i], "state": "busy"} for i in range(4)], "running": 4},
        ),
        WorkerInfo("laptop", {"status": "available", "gpu_model": "CPU", "gpu_memory_mb": 0}),
    ]
    console = Console(record=True, width=140)
    console.print(status_table(workers))
    text = console.export_text()
    assert "2 worker(s), 4 job(s) running, 5 queued" in text
    gpu_box = next(line for line in text.splitlines() if "gpu-box" in line)
    for cell in ("busy", "0,1,2,3", "0/4", "5/16"):
        assert cell in gpu_box, (cell, gpu_box)
    laptop = next(line for line in text.splitlines() if "laptop" in line)
    assert "1/1" in laptop and "available" in laptop

    mixed = [{"index": 0, "gpus": [0], "model": "RTX-4090", "state": "busy"},
             {"index": 1, "gpus": [1], "model": "T4", "state": "available"},
             {"index": 2, "gpus": [2], "model": "T4", "state": "held"}]  # fmt: skip
    box = WorkerInfo("mixed", props("busy", 3, 1), {"slots": mixed})
    assert box.gpu_models == ["RTX-4090", "T4"] and box.running == 1
    console = Console(record=True, width=140)
    console.print(status_table([box]))
    assert "RTX-4090, T4" in console.export_text()  # each GPU's own model, not only the first one


def test_the_progress_line_shows_the_queue_position() -> None:
    assert format_queued(3, 41.6) == "queued: position 3, starts in ~42 s"
    assert format_queued(None, None) == "queued"
    console = Console(record=True, width=120)
    with JobProgress(console) as progress:
        progress.event(
            JobStatus("j", "queued", 0.0, "waiting", 1, queue_position=2, estimated_start_seconds=5.0)
        )
    assert "queued: position 2, starts in ~5 s" in console.export_text()


async def test_which_workers_are_asked_now_and_with_queue(room: Room) -> None:
    await raw_worker(room, "free-4", props("available", 4, 2))
    await raw_worker(room, "full-4", props("busy", 4, 0, queue_length=2))
    await raw_worker(room, "free-1", props("available", 1, 1))
    await raw_worker(room, "reserved-1", props("reserved", 1, 0))
    client = await room.client()

    async def asked(gpus: int, queue: bool) -> list[str]:
        found = await client._candidates(Requirements(gpus=gpus), queue)
        return sorted(worker.peer_id for worker in found)

    assert await asked(1, queue=False) == ["free-1", "free-4"]
    assert await asked(2, queue=False) == ["free-4"]  # two free slots together
    assert await asked(3, queue=False) == []
    assert await asked(1, queue=True) == ["free-1", "free-4", "full-4", "reserved-1"]
    assert await asked(3, queue=True) == ["free-4", "full-4"]  # could ever hold three slots


async def test_the_earliest_queue_start_wins_over_real_signaling_and_the_other_entry_is_released(
    room: Room,
) -> None:
    late, late_inbox = await raw_worker(room, "late", props("busy", 1, 0, queue_length=4))
    soon, soon_inbox = await raw_worker(room, "soon", props("busy", 1, 0, queue_length=1))
    client = await room.client(response=5.0)
    submit = asyncio.create_task(client.submit("ticker", queue=True, job_id="queued-job"))
    for peer, inbox, position, start in ((late, late_inbox, 5, 300.0), (soon, soon_inbox, 2, 20.0)):
        request = await inbox.next_of("job_request")
        assert request["queue"] is True and "gpus" not in request.get("requirements", {})
        response = {
            "app_message_type": "job_response",
            "job_id": "queued-job",
            "accepted": True,
            "queued": True,
            "queue_position": position,
            "estimated_start_seconds": start,
        }
        await peer.send(client.peer_id, response)
    cancel = await late_inbox.next_of("job_cancel")
    assert cancel["job_id"] == "queued-job" and "job_key" not in cancel  # a loser never learns the key
    assignment = await soon_inbox.next_of("job_assignment")
    assert assignment["job_key"]
    offer = await soon_inbox.next_of("rtc_offer")  # inputs are uploaded while queued: the channel is offered
    assert offer["job_id"] == "queued-job"
    job = client._jobs["queued-job"]
    assert job.queued and job.queue_position == 2 and job.estimated_start_seconds == 20.0
    submit.cancel()  # nobody answers the offer: giving up releases the one queue entry, with the key
    with contextlib.suppress(asyncio.CancelledError):
        await submit
    released = await soon_inbox.next_of("job_cancel")
    assert released["job_key"] == assignment["job_key"]
    assert late_inbox.empty(), "the loser hears nothing after its release"
