"""Whole jobs through the client API: real server, worker host, aiortc data channel and job subprocesses."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from rooms import TIMEOUT, Room, advertised, alive, eventually

from fsm_worker.client import (
    AllRejectedError,
    Job,
    JobCancelledError,
    JobFailedError,
    NoWorkersError,
    WorkerRefusedError,
)
from fsm_worker.jobs.train_demo import load_model
from fsm_worker.protocol.messages import JobCancelled, JobComplete, JobStatus, Requirements
from fsm_worker.protocol.worker.states import WorkerStatus


async def first_running(job: Job) -> None:
    async with asyncio.timeout(TIMEOUT):
        async for event in job.events():
            if isinstance(event, JobStatus) and event.status == "running":
                return
    raise AssertionError("the job ended before it reported running")


async def test_train_demo_runs_end_to_end(room: Room, dataset: Path, tmp_path: Path) -> None:
    worker = await room.worker()
    client = await room.client()
    job = await client.submit("train-demo", {"epochs": 8, "learning_rate": 0.05}, [dataset])
    assert job.worker_id == "worker-1" and [f.name for f in job.uploaded] == ["data.csv"]
    outcome = await job.result(tmp_path / "out")

    assert [event.seq for event in job.history] == list(range(1, len(job.history) + 1))
    assert isinstance(job.history[0], JobStatus) and job.history[0].status == "starting"
    assert isinstance(job.history[-1], JobComplete)
    assert all(isinstance(e, JobStatus) and 0 < e.progress < 1 for e in job.history[1:-1])
    assert {path.name for path in outcome.files} == {"model.npz", "metrics.json"}
    assert outcome.training_duration_minutes > 0 and outcome.model_size_mb and outcome.model_size_mb > 0
    model = load_model(tmp_path / "out" / "model.npz")
    rows = np.loadtxt(dataset, delimiter=",", skiprows=1)
    predicted = np.array([int(label) for label in model.predict(rows[:, :-1])])
    accuracy = float(np.mean(predicted == rows[:, -1].astype(int)))
    assert accuracy > 0.9
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics
    assert worker.status is WorkerStatus.AVAILABLE


async def test_failed_job_reports_code_message_and_recoverable(room: Room, tmp_path: Path) -> None:
    await room.worker()
    client = await room.client()
    job = await client.submit("exit-3")
    with pytest.raises(JobFailedError) as failed:
        await job.result(tmp_path / "out")
    assert failed.value.code == "EXIT_NONZERO" and not failed.value.recoverable
    assert "boom" in failed.value.message


async def test_cancel_mid_run_leaves_no_process(room: Room, tmp_path: Path) -> None:
    worker = await room.worker()
    client = await room.client()
    job = await client.submit("long-ticker")
    await first_running(job)
    pids = [int(pid) for pid in (tmp_path / "worker-1.pids").read_text().split()]
    assert all(alive(pid) for pid in pids)
    await job.cancel()
    assert isinstance(job.terminal, JobCancelled)
    assert not any(alive(pid) for pid in pids), "a process of the cancelled job survived"
    assert worker.status is WorkerStatus.AVAILABLE
    await eventually(lambda: asyncio.to_thread(lambda: not worker.job_dir(job.job_id).exists()))
    with pytest.raises(JobCancelledError):
        await job.result(tmp_path / "out")


async def test_channel_drop_mid_run_then_results_fetched_on_a_new_channel(room: Room, tmp_path: Path) -> None:
    await room.worker()
    client = await room.client()
    job = await client.submit("ticker")
    await first_running(job)
    await job.close_channel()  # the data channel drops while the job runs
    outcome = await job.result(tmp_path / "out")  # the job went on; a new channel fetches the results
    assert [path.name for path in outcome.files] == ["ticks.txt"]
    assert (tmp_path / "out" / "ticks.txt").read_text() == "12 ticks\n"


async def test_a_download_dropped_at_half_resumes_on_a_new_channel(
    room: Room, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await room.worker()
    client = await room.client()
    big = tmp_path / "big.bin"
    data = np.random.default_rng(5).bytes(8 * 1024 * 1024)
    big.write_bytes(data)
    job = await client.submit("copy", inputs=[big])
    seen: list[int] = []
    dropped: list[asyncio.Task[None]] = []

    def drop_at_half(done: int, total: int) -> None:
        seen.append(done)
        if done >= total // 2 and not dropped:
            dropped.append(asyncio.ensure_future(job.close_channel()))  # the channel drops mid-download

    outcome = await job.result(tmp_path / "out", drop_at_half)
    assert dropped
    assert "data channel dropped during the download" in caplog.text  # it did drop, and was resumed
    assert [path.name for path in outcome.files] == ["big.bin"]
    assert (
        hashlib.sha256((tmp_path / "out" / "big.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
    )
    at_drop = seen.index(next(d for d in seen if d >= len(data) // 2))
    restarted = [d for d in seen[at_drop + 1 :] if d < seen[at_drop] // 2]
    assert not restarted, "the resumed download started the file again"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["big.bin"]  # no staging left


async def test_server_restart_mid_job_loses_no_event(room: Room, tmp_path: Path) -> None:
    worker = await room.worker()
    client = await room.client()
    job = await client.submit("ticker")
    await first_running(job)
    await room.stop_server()
    await eventually(lambda: asyncio.to_thread(lambda: not worker.signaling.connected))
    await asyncio.sleep(0.6)  # the job keeps ticking while the server is down
    await room.start_server()
    outcome = await job.result(tmp_path / "out")
    seqs = [event.seq for event in job.history]
    assert seqs == list(range(1, len(seqs) + 1)), "events lost, duplicated or out of order"
    assert isinstance(job.history[-1], JobComplete) and len(job.history) >= 4
    assert outcome.files and worker.peer_id == "worker-1"


async def test_two_workers_accept_one_wins_the_other_is_released(
    room: Room, dataset: Path, tmp_path: Path
) -> None:
    first = await room.worker("worker-a")
    second = await room.worker("worker-b")
    client = await room.client()
    job = await client.submit("ticker")
    loser = second if job.worker_id == "worker-a" else first
    assert job.worker_id in ("worker-a", "worker-b")
    await eventually(lambda: asyncio.to_thread(lambda: loser.status is WorkerStatus.AVAILABLE), timeout=5)
    props = await advertised(client.signaling, loser.peer_id)
    assert props["status"] == "available" and "job_id" not in props
    await job.result(tmp_path / "out")


async def test_all_rejected_lists_every_reason(room: Room) -> None:
    await room.worker("worker-a")
    await room.worker("worker-b")
    client = await room.client()
    with pytest.raises(AllRejectedError) as rejected:
        await client.submit("render-video")
    assert set(rejected.value.reasons) == {"worker-a", "worker-b"}
    for reason, details in rejected.value.reasons.values():
        assert reason == "incompatible" and "unsupported job type 'render-video'" in details[0]
    assert "worker-a: incompatible" in str(rejected.value)


async def test_no_worker_meets_the_requirements(room: Room) -> None:
    await room.worker()
    client = await room.client()
    with pytest.raises(NoWorkersError):
        await client.submit("ticker", requirements=Requirements(min_gpu_memory_mb=65536))


async def test_results_are_removed_when_retention_ends(room: Room, tmp_path: Path) -> None:
    worker = await room.worker(retention=1.0)
    client = await room.client()
    job = await client.submit("ticker")
    await job.wait()
    job_dir = worker.job_dir(job.job_id)
    await eventually(lambda: asyncio.to_thread(lambda: not job_dir.exists()))
    await job.close_channel()
    with pytest.raises(WorkerRefusedError) as refused:
        await job.download(tmp_path / "late")
    assert refused.value.code == "NOT_ASSIGNED"


async def test_stale_job_directories_are_removed_at_start(room: Room, tmp_path: Path) -> None:
    stale = tmp_path / "worker-1" / "jobs" / "left-by-a-crash"
    stale.mkdir(parents=True)
    (stale / "big.bin").write_bytes(b"x" * 1000)
    await room.worker()
    assert not stale.exists()


async def test_shutdown_lets_a_job_finish_and_a_second_request_stops_it(room: Room, tmp_path: Path) -> None:
    worker = await room.worker()
    client = await room.client()
    job = await client.submit("long-ticker")
    await first_running(job)
    graceful = asyncio.create_task(worker.shutdown())  # policy "finish": waits for the running job
    await asyncio.sleep(0.5)
    assert not graceful.done() and job.terminal is None
    await worker.shutdown()  # the second request stops the job
    await graceful
    with pytest.raises(JobFailedError) as failed:
        await job.result(tmp_path / "out")
    assert failed.value.code == "WORKER_SHUTDOWN" and failed.value.recoverable
