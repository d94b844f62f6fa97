"""Slots and the queue over real processes (issue 12): a worker process with fake GPUs (a configured GPU list,
CPU jobs), a real signaling server, real clients racing for its slots.

Each job records, from inside its own process, the `CUDA_VISIBLE_DEVICES` it saw and when it started and ended
(tests/scripts/slot_job.py), so "no GPU in two jobs at once" is checked on what the jobs saw, not on what the
worker says about itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import attrs
import pytest
from rooms import SCRIPTS, TIMEOUT, Room, advertised, eventually

from fsm_worker.client import AllRejectedError, Job, JobClient, WorkerGoneError
from fsm_worker.protocol.messages import JobCancelled, JobComplete, JobStatus, Requirements

REPO = Path(__file__).resolve().parents[2]
GPUS = ("0", "1", "2", "3")


@attrs.define
class SlotsWorker:
    """A worker host with slots in a child process (tests/scripts/slots_worker.py); its jobs log to `log`."""

    process: asyncio.subprocess.Process
    log: Path

    @classmethod
    async def start(cls, room: Room, peer_id: str, **overrides: Any) -> SlotsWorker:
        log = room.tmp / f"{peer_id}.jobs.jsonl"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(REPO), str(REPO / "tests")))}
        env["FSM_TEST_SLOTS"] = json.dumps({"gpu_memory_mb": 8192, **overrides})
        args = (room.url, room.token, peer_id, str(room.tmp / peer_id), str(log))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-u", str(SCRIPTS / "slots_worker.py"), *args, stdout=asyncio.subprocess.PIPE, env=env
        )  # fmt: skip
        worker = cls(proc, log)
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(TIMEOUT):
                while (line := await proc.stdout.readline()) != b"READY\n":
                    if not line:
                        raise RuntimeError(f"worker process exited before READY (rc={await proc.wait()})")
        except BaseException:
            await worker.kill()
            raise
        return worker

    def records(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    async def kill(self) -> None:
        """SIGKILL the worker (a crash), then the job processes it left behind (jobs run detached)."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        for record in self.records():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(record["pid"], signal.SIGKILL)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(TIMEOUT):
                    await self.process.wait()
            except TimeoutError:
                pass
        await self.kill()


def runs(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """job id → {cuda, start, end} from the jobs' own records."""
    found: dict[str, dict[str, Any]] = defaultdict(dict)
    for record in records:
        found[record["job_id"]]["cuda"] = record["cuda"]
        found[record["job_id"]][record["event"]] = record["t"]
    return dict(found)


def assert_no_double_booking(by_job: dict[str, dict[str, Any]], gpus: tuple[str, ...]) -> None:
    """Every job saw exactly one GPU of the worker, and no GPU ran two jobs at once."""
    per_gpu: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for job_id, run in by_job.items():
        assert run["cuda"] in gpus, f"{job_id} saw CUDA_VISIBLE_DEVICES={run['cuda']!r}"
        per_gpu[run["cuda"]].append((run["start"], run.get("end", float("inf")), job_id))
    for gpu, intervals in per_gpu.items():
        intervals.sort()
        for (_, end, first), (start, _, second) in itertools.pairwise(intervals):
            assert start >= end, f"GPU {gpu}: {second} started before {first} ended"


def was_queued(job: Job, queued_at_submit: bool) -> bool:
    return queued_at_submit or any(isinstance(e, JobStatus) and e.status == "queued" for e in job.history)


async def submit_queued(client: JobClient, job_type: str, job_id: str) -> tuple[Job, bool]:
    job = await client.submit(job_type, queue=True, job_id=job_id)
    return job, job.queued


async def test_forty_jobs_from_ten_clients_race_for_four_slots(room: Room) -> None:
    worker = await SlotsWorker.start(room, "gpu-box", gpus=list(GPUS), queue_size=36, max_jobs_per_client=4)
    try:
        clients = [await room.client(f"racer-{n}", response=TIMEOUT) for n in range(10)]
        submits = [
            submit_queued(client, "slot-job", f"race-{n}-{k}")
            for n, client in enumerate(clients)
            for k in range(4)
        ]
        async with asyncio.timeout(4 * TIMEOUT):
            submitted = await asyncio.gather(*submits)
            terminals = await asyncio.gather(*(job.wait() for job, _ in submitted))
        assert all(isinstance(t, JobComplete) for t in terminals), terminals
        by_job = runs(worker.records())
        assert sorted(by_job) == sorted(job.job_id for job, _ in submitted), "every job ran exactly once"
        assert all("end" in run for run in by_job.values())
        assert_no_double_booking(by_job, GPUS)
        assert {run["cuda"] for run in by_job.values()} == set(GPUS), (
            "the first four requests take all four slots"
        )
        queued = [job for job, at_submit in submitted if was_queued(job, at_submit)]
        assert queued, "40 racing jobs on 4 slots: some must have waited"
        for job in queued:  # a queued job reported its place, then left the queue for a slot and ran
            statuses = [e for e in job.history if isinstance(e, JobStatus)]
            places = [e.queue_position for e in statuses if e.status == "queued"]
            assert all(p is not None and p >= 1 for p in places), places
            assert statuses[-1].status != "queued" and not job.queued
        props = await advertised((await room.peer("observer"))[0], "gpu-box")
        assert props["slots"] == 4 and props["queue_length"] == 0
        assert "job_id" not in props, "a busy worker never publishes other clients' job ids"
    finally:
        await worker.stop()


async def test_a_job_cancelled_while_queued_never_runs_and_the_next_one_moves_up(room: Room) -> None:
    worker = await SlotsWorker.start(room, "one-gpu", gpus=["0"], queue_size=4)
    try:
        holder, first, second = [await room.client(name) for name in ("holder", "first", "second")]
        running = await holder.submit("slot-long", job_id="holds-the-slot")
        await eventually(lambda: _started(worker, "holds-the-slot"))
        cancelled = await first.submit("slot-job", queue=True, job_id="cancelled-in-queue")
        waiting = await second.submit("slot-job", queue=True, job_id="moves-up")
        assert (cancelled.queued, cancelled.queue_position) == (True, 1)
        assert (waiting.queued, waiting.queue_position) == (True, 2)
        async with asyncio.timeout(TIMEOUT):
            await cancelled.cancel()
        assert isinstance(cancelled.terminal, JobCancelled)
        async with asyncio.timeout(TIMEOUT):
            async for event in waiting.events():
                if isinstance(event, JobStatus) and event.status == "queued" and event.queue_position == 1:
                    break
        assert waiting.queued and waiting.queue_position == 1
        async with asyncio.timeout(TIMEOUT):
            await running.cancel()
            assert isinstance(await waiting.wait(), JobComplete)
        by_job = runs(worker.records())
        assert "cancelled-in-queue" not in by_job, "a job cancelled while queued never starts"
        assert by_job["moves-up"]["start"] >= by_job["holds-the-slot"]["start"]
        assert_no_double_booking(by_job, ("0",))
    finally:
        await worker.stop()


async def test_worker_killed_with_a_full_queue_gives_every_client_a_clear_error(room: Room) -> None:
    worker = await SlotsWorker.start(room, "doomed", gpus=["0", "1"], queue_size=3, max_jobs_per_client=4)
    try:
        timeouts: dict[str, Any] = {"liveness": 0.5, "worker_gone": 1.5, "queue_keepalive": 1.0}
        holders = [await room.client(f"holder-{n}", **timeouts) for n in range(2)]
        waiters = [await room.client(f"waiter-{n}", **timeouts) for n in range(3)]
        running = [await c.submit("slot-long", job_id=f"runs-{n}") for n, c in enumerate(holders)]
        for job in running:
            await eventually(lambda job=job: _started(worker, job.job_id))  # type: ignore[misc]
        queued = [await c.submit("slot-long", queue=True, job_id=f"waits-{n}") for n, c in enumerate(waiters)]
        assert [job.queue_position for job in queued] == [1, 2, 3]
        late = await room.client("late", **timeouts)
        with pytest.raises(AllRejectedError, match="queue_full"):
            await late.submit("slot-job", queue=True, job_id="no-room")
        await worker.kill()
        for job in queued:
            async with asyncio.timeout(TIMEOUT):
                with pytest.raises(WorkerGoneError, match="waiting in its queue at position") as raised:
                    await job.wait()
            assert "never started" in str(raised.value) and "doomed" in str(raised.value)
        for job in running:
            async with asyncio.timeout(TIMEOUT):
                with pytest.raises(WorkerGoneError, match="doomed"):
                    await job.wait()
    finally:
        await worker.kill()


async def _started(worker: SlotsWorker, job_id: str) -> bool:
    return any(r["job_id"] == job_id and r["event"] == "start" for r in worker.records())


async def test_cli_submit_wait_queues_shows_its_place_and_status_shows_the_queue(room: Room) -> None:
    worker = await SlotsWorker.start(room, "cli-slots", gpus=["0"], queue_size=4)
    cli = [sys.executable, "-m", "fsm_worker.cli"]
    env = {**os.environ, "COLUMNS": "160", "FSM_WORKER_STATE_DIR": str(room.tmp / "state")}
    try:
        holder = await room.client("holder")
        running = await holder.submit("slot-long", job_id="holds-the-slot")
        await eventually(lambda: _started(worker, "holds-the-slot"))
        submit = await asyncio.create_subprocess_exec(
            *cli, "submit", "--server", room.url, "--token", room.token, "--job-type", "slot-job", "--wait",
            "--gpus", "1", "--out", str(room.tmp / "out"), "--loopback-only",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        assert submit.stderr is not None
        seen = ""
        async with asyncio.timeout(TIMEOUT):
            while "queued at position 1 on cli-slots" not in seen:
                line = (await submit.stderr.readline()).decode()
                assert line, f"submit exited before its job was queued: {seen}"
                seen += line
        status = await asyncio.create_subprocess_exec(
            *cli, "status", "--server", room.url, "--token", room.token,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        async with asyncio.timeout(TIMEOUT):
            out, _ = await status.communicate()
        table = out.decode()
        assert status.returncode == 0 and "1 job(s) running, 1 queued" in table, table
        row = next(line for line in table.splitlines() if "cli-slots" in line)
        assert "busy" in row and "0/1" in row and "1/4" in row, row
        await running.cancel()  # the slot frees: the queued CLI job runs and completes
        async with asyncio.timeout(TIMEOUT):
            printed, rest = await submit.communicate()
        assert submit.returncode == 0, (seen + rest.decode())[-3000:]
        assert "completed on cli-slots" in printed.decode()
        by_job = runs(worker.records())
        (queued_job,) = [job_id for job_id in by_job if job_id != "holds-the-slot"]
        assert "end" in by_job[queued_job], "the queued job ran to its end once the slot was free"
        assert_no_double_booking(by_job, ("0",))
    finally:
        await worker.stop()


async def test_discovery_filters_on_free_slots_and_each_gpus_memory_and_model(room: Room) -> None:
    """Per-GPU memory and model given in `--gpus`, published per slot; discovery finds the worker only while a
    big enough GPU is free; `metadata.job` names the run, never the job."""
    worker = await SlotsWorker.start(room, "mixed", gpus=["0:24576:RTX-4090", "1:8192:T4"])
    try:
        peer, _ = await room.peer("looker")
        big_now = {
            "role": "worker",
            "properties": {"free_slots": {"$gte": 1}, "gpu_memory_mb": {"$gte": 16000}},
        }
        assert [p["peer_id"] for p in await peer.discover(big_now)] == ["mixed"]
        (found,) = await peer.discover({"role": "worker"})
        slots = [(s["gpus"], s["memory_mb"], s.get("model")) for s in found["metadata"]["slots"]]
        assert slots == [([0], 24576, "RTX-4090"), ([1], 8192, "T4")]
        assert found["metadata"]["properties"]["gpu_model"] == "RTX-4090"

        client = await room.client("big-job")
        wanted = Requirements(min_gpu_memory_mb=16000)
        job = await client.submit("slot-long", requirements=wanted, job_id="needs-24-gb")
        await eventually(lambda: _started(worker, "needs-24-gb"))
        assert runs(worker.records())["needs-24-gb"]["cuda"] == "0", "the job took the GPU with the memory"

        async def published_run() -> bool:
            (seen,) = await peer.discover({"role": "worker"})
            return isinstance(seen["metadata"].get("job"), dict)

        await eventually(published_run)
        props = await advertised(peer, "mixed")
        assert (props["free_slots"], props["gpu_memory_mb"]) == (1, 8192)  # only the 8 GB GPU is free
        assert await peer.discover(big_now) == []
        assert [p["peer_id"] for p in await peer.discover({"properties": {"free_slots": {"$gte": 1}}})] == [
            "mixed"
        ]
        (seen,) = await peer.discover({"role": "worker"})
        assert seen["metadata"]["job"]["run"] == 1 and "needs-24-gb" not in json.dumps(seen["metadata"])
        async with asyncio.timeout(TIMEOUT):
            await job.cancel()
    finally:
        await worker.stop()
