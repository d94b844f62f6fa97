"""A journaled worker SIGKILLed and restarted under the same id and workdir (real processes, real server).

What the journal brings back is proven on the wire: the reservation a client holds, and a running job's end
(its process does not survive the worker yet, so it is reported once as `KILLED`, recoverable).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from rooms import TIMEOUT, Room

from fsm_worker.client import JobFailedError
from fsm_worker.protocol.messages import JobStatus

from .conftest import WorkerProcess, probe


async def test_a_held_reservation_survives_a_sigkill(room: Room, tmp_path: Path) -> None:
    workdir = tmp_path / "phoenix"
    worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir, journal=True)
    try:
        peer, inbox = await room.peer("holder")
        request = {"app_message_type": "job_request", "job_id": "j1", "job_type": "train-demo"}
        assert (await peer.send("phoenix", request)).delivered
        assert (await inbox.next_of("job_response"))["accepted"] is True
        await worker.kill()
        worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir, journal=True)
        # The restarted worker still holds j1 for its client: a rival is refused, the holder's assignment taken.
        rival, rival_inbox = await room.peer("rival")
        assert (await rival.send("phoenix", {**request, "job_id": "j2"})).delivered
        assert (await rival_inbox.next_of("job_response"))["accepted"] is False
        assignment = {"app_message_type": "job_assignment", "job_id": "j1"}
        assert (await peer.send("phoenix", assignment)).delivered
        assert await probe(peer, inbox, "phoenix") == []  # taken without a word, as before the restart
        cancel = {"app_message_type": "job_cancel", "job_id": "j1"}
        # The job is this client's: its cancel ends it, numbered as the job's first event.
        assert (await peer.send("phoenix", cancel)).delivered
        cancelled = await inbox.next_of("job_cancelled")
        assert cancelled["job_id"] == "j1" and cancelled["seq"] == 1
    finally:
        await worker.kill()


async def test_a_running_job_lost_with_the_worker_is_reported_once(room: Room, tmp_path: Path) -> None:
    workdir = tmp_path / "phoenix"
    worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir, journal=True)
    try:
        client = await room.client(liveness=0.5, worker_gone=30.0)  # a restart window wider than the restart
        job = await client.submit("long-ticker")
        async with asyncio.timeout(TIMEOUT):
            async for event in job.events():
                if isinstance(event, JobStatus) and event.status == "running":
                    break
        await worker.kill()
        worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir, journal=True)
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(JobFailedError) as failed:
                await job.result(tmp_path / "out")
        assert failed.value.code == "KILLED" and failed.value.recoverable
        assert "restarted" in failed.value.message
    finally:
        await worker.kill()


@pytest.mark.parametrize("point", ["after_journal", "after_send"])
async def test_killed_around_the_send_loses_and_repeats_nothing(
    room: Room, tmp_path: Path, point: str
) -> None:
    """SIGKILL right after the journal commit of a `job_response` (never sent), or right after it was sent."""
    workdir = tmp_path / "phoenix"
    worker = await WorkerProcess.start(
        room.url, room.token, "phoenix", workdir, journal=True, kill_at=f"{point}:job_response"
    )
    try:
        peer, inbox = await room.peer("holder")
        request = {"app_message_type": "job_request", "job_id": "j1", "job_type": "train-demo"}
        assert (await peer.send("phoenix", request)).delivered
        async with asyncio.timeout(TIMEOUT):
            assert await worker.process.wait() == -9  # the kill point was reached
        worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir, journal=True)
        before = [m["app_message_type"] for m in await probe(peer, inbox, "phoenix")]
        if point == "after_journal":  # never sent: the client repeats its request, the held one answers it
            assert before == []
            assert (await peer.send("phoenix", request)).delivered
            assert (await inbox.next_of("job_response"))["accepted"] is True
        else:  # sent once before the kill, not again after the restart
            assert before == ["job_response"]
        assert [m["app_message_type"] for m in await probe(peer, inbox, "phoenix")] == []
        rival, rival_inbox = await room.peer("rival")
        assert (await rival.send("phoenix", {**request, "job_id": "j2"})).delivered
        assert (await rival_inbox.next_of("job_response"))["accepted"] is False  # j1 is still held, once
        assert (await peer.send("phoenix", {"app_message_type": "job_assignment", "job_id": "j1"})).delivered
        assert (await peer.send("phoenix", {"app_message_type": "job_cancel", "job_id": "j1"})).delivered
        cancelled = await inbox.next_of("job_cancelled")
        assert cancelled["seq"] == 1
    finally:
        await worker.kill()
