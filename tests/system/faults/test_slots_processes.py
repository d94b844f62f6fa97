"""Issue 12 over real processes: a worker process with two (fake) GPUs runs two clients' jobs at once, each
with the CUDA_VISIBLE_DEVICES of its own slot, and a journaled one restarted with both running adopts both."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from rooms import TIMEOUT, Room, advertised

from fsm_worker.protocol.messages import JobCancelled, JobStatus

from .conftest import WorkerProcess


async def test_two_clients_jobs_run_at_once_each_with_its_slots_gpu(room: Room, tmp_path: Path) -> None:
    worker = await WorkerProcess.start(room.url, room.token, "duo", tmp_path / "duo", gpus="0,1")
    try:
        alice, bob = await room.client("alice"), await room.client("bob")
        props = await advertised(alice.signaling, "duo")
        assert (props["slots"], props["free_slots"], props["max_concurrent_jobs"]) == (2, 2, 2)
        assert "job_id" not in props
        # each probe runs until both run at once (the barrier): one slot would fail the first after 30 s
        first = await alice.submit("gpu-probe")
        second = await bob.submit("gpu-probe")
        async with asyncio.timeout(TIMEOUT * 2):
            await asyncio.gather(first.result(tmp_path / "a"), second.result(tmp_path / "b"))
        seen = [json.loads((tmp_path / out / "cuda.txt").read_text()) for out in ("a", "b")]
        assert sorted(s["cuda_visible_devices"] for s in seen) == ["0", "1"]
        assert all(s["together"] == 2 for s in seen)
    finally:
        await worker.kill()


async def test_a_journaled_worker_restarted_with_two_running_jobs_adopts_both(
    room: Room, tmp_path: Path
) -> None:
    workdir = tmp_path / "duo"
    worker = await WorkerProcess.start(room.url, room.token, "duo", workdir, journal=True, gpus="0,1")
    try:
        alice, bob = await room.client("alice", worker_gone=30.0), await room.client("bob", worker_gone=30.0)
        jobs = [await alice.submit("long-ticker"), await bob.submit("long-ticker")]
        for job in jobs:  # both run: each has reported progress
            async with asyncio.timeout(TIMEOUT):
                async for event in job.events():
                    if isinstance(event, JobStatus) and event.status == "running":
                        break
        worker.process.kill()  # SIGKILL: the detached runs outlive it
        await worker.process.wait()
        worker = await WorkerProcess.start(room.url, room.token, "duo", workdir, journal=True, gpus="0,1")
        props = await advertised(alice.signaling, "duo")
        assert (props["status"], props["free_slots"]) == (
            "busy",
            0,
        )  # both slots held again after the restore
        for job in jobs:  # both runs were adopted and are cancelled by their own clients
            await job.cancel()
            assert isinstance(job.terminal, JobCancelled)
    finally:
        await worker.kill()
