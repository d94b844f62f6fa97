"""The soft stop and metrics end to end: a real worker, real job subprocesses, the client API."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rooms import TIMEOUT, Room

from fsm_worker.client import Job
from fsm_worker.protocol.messages import JobComplete, JobStatus
from fsm_worker.protocol.worker.states import WorkerStatus


async def first_running(job: Job) -> None:
    async with asyncio.timeout(TIMEOUT):
        async for event in job.events():
            if isinstance(event, JobStatus) and event.status == "running":
                return
    raise AssertionError("the job ended before it reported running")


async def test_job_stop_ends_the_run_as_completed_and_keeps_its_results(room: Room, tmp_path: Path) -> None:
    worker = await room.worker()
    client = await room.client()
    job = await client.submit("long-ticker")
    await first_running(job)
    stop = {"app_message_type": "job_stop", "job_id": job.job_id, "job_key": job.job_key}
    assert job.worker_id is not None
    assert (await client.signaling.send(job.worker_id, stop)).delivered
    outcome = await job.result(tmp_path / "out")
    final = job.history[-1]
    assert isinstance(final, JobComplete) and final.stopped_early is True
    assert final.result.training_duration_minutes > 0
    assert outcome.files == ()  # stopped before it wrote any: downloaded as an empty result, not refused
    assert worker.status is WorkerStatus.AVAILABLE and worker.core.retained_job_ids() == [job.job_id]
    assert worker.runs.runner.running == []


async def test_the_metrics_a_job_reports_reach_the_client(room: Room, dataset: Path, tmp_path: Path) -> None:
    """train-demo reports epoch, loss and accuracies each epoch, and its final numbers with the result."""
    await room.worker()
    client = await room.client()
    job = await client.submit("train-demo", {"epochs": 4, "learning_rate": 0.05}, [dataset])
    await job.result(tmp_path / "out")
    epochs = [e.metrics for e in job.history if isinstance(e, JobStatus) and e.metrics is not None]
    seen = [
        m.epoch for m in epochs if m.epoch is not None
    ]  # progress is rate-limited: some epochs may be merged, never the last
    assert len(seen) == len(epochs), "every progress report names its epoch"
    assert seen and seen == sorted(set(seen)) and seen[-1] == 4, seen
    assert all(m.loss is not None and "accuracy" in m.extra for m in epochs)
    final = job.history[-1]
    assert isinstance(final, JobComplete) and final.metrics is not None and final.stopped_early is None
    assert final.metrics.val_loss is not None and "val_accuracy" in final.metrics.extra
