"""Worker killed mid-job (SIGKILL of its process): the client gets a clear failure in bounded time, no hang."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from rooms import TIMEOUT, Room

from fsm_worker.client import Job, JobClientError, WorkerGoneError
from fsm_worker.protocol.messages import JobStatus

from .conftest import WorkerProcess

#: The clients below ask a silent worker for news every 0.5 s (liveness) and give it 1.5 s (worker_gone).
BOUND = 15.0  # far above liveness + worker_gone: a hang, not slowness, trips it


async def first_running(job: Job) -> None:
    async with asyncio.timeout(TIMEOUT):
        async for event in job.events():
            if isinstance(event, JobStatus) and event.status == "running":
                return
    raise AssertionError("the job ended before it reported running")


async def test_worker_killed_mid_job_raises_worker_gone(room: Room, tmp_path: Path) -> None:
    worker = await WorkerProcess.start(room.url, room.token, "doomed", tmp_path / "doomed")
    try:
        client = await room.client(liveness=0.5, worker_gone=1.5)
        job = await client.submit("long-ticker")
        await first_running(job)
        await worker.kill()
        async with asyncio.timeout(BOUND):
            with pytest.raises(WorkerGoneError, match="doomed"):
                await job.result(tmp_path / "out")
        assert not job.finished
    finally:
        await worker.kill()


async def test_worker_killed_while_client_follows_events(room: Room, tmp_path: Path) -> None:
    worker = await WorkerProcess.start(room.url, room.token, "doomed", tmp_path / "doomed")
    try:
        client = await room.client(liveness=0.5, worker_gone=1.5)
        job = await client.submit("long-ticker")
        seen = 0
        async with asyncio.timeout(BOUND + TIMEOUT):
            with pytest.raises(WorkerGoneError):
                async for event in job.events():
                    seen += 1
                    if isinstance(event, JobStatus) and event.status == "running" and seen == 2:
                        await worker.kill()
        assert seen >= 2
    finally:
        await worker.kill()


async def test_worker_restarted_under_same_id_fails_the_job(room: Room, tmp_path: Path) -> None:
    workdir = tmp_path / "phoenix"  # the same workdir: the restarted worker presents the same resume secret
    worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir)
    try:
        client = await room.client(liveness=0.5, worker_gone=1.5)
        job = await client.submit("long-ticker")
        await first_running(job)
        await worker.kill()
        worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir)
        async with asyncio.timeout(5.0):  # a fix answers on the first liveness check (after 0.5 s)
            with pytest.raises(JobClientError):  # WorkerGoneError (or a JobFailedError naming the restart)
                await job.result(tmp_path / "out")
    finally:
        await worker.kill()
