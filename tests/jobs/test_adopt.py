"""Detached jobs outlive the process holding the runner; a new runner adopts them (real subprocesses)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from support.jobs import SCRIPTS, TIMEOUT, Recorder, make_registry, make_spec, pid_gone

from fsm_worker.jobs import ErrorCode, JobRunner, JobSpec, RunFailed, RunProgress, RunStopped, RunSucceeded
from fsm_worker.jobs.registry import StaticCommandHandler
from fsm_worker.shells.runner.detached import RunFiles, RunRecord, process_start_time
from fsm_worker.shells.runner.joblog import disk_use, read_bases
from fsm_worker.shells.runner.procgroup import RunScope
from fsm_worker.shells.runner.runner import Adoption

COUNT = 12


def counter_registry(count: int, delay: float, code: int, pad: int = 0) -> Any:
    registry = make_registry()
    argv = (sys.executable, "-u", str(SCRIPTS / "counter.py"), str(count), str(delay), str(code), str(pad))
    registry.register("counter", StaticCommandHandler(argv))
    return registry


class Host:
    """A process holding a JobRunner that started one counter job; it reports events with resume offsets."""

    def __init__(self, proc: asyncio.subprocess.Process, workdir: Path) -> None:
        self.proc, self.workdir, self.lines = proc, workdir, list[dict[str, Any]]()

    @classmethod
    async def start(cls, tmp_path: Path, count: int, delay: float, code: int, *logs: int) -> Host:
        """``logs``: the counter's filler bytes per step and the runner's log bound."""
        workdir = tmp_path / "job"
        (workdir / "inputs").mkdir(parents=True)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(SCRIPTS / "adopt_host.py"), str(workdir), str(count), str(delay), str(code),
            *map(str, logs), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc, workdir)

    async def read_until(self, progress_events: int) -> None:
        assert self.proc.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            while sum(line["kind"] == "RunProgress" for line in self.lines) < progress_events:
                self.lines.append(json.loads(await self.proc.stdout.readline()))

    async def kill(self) -> None:
        """SIGKILL the host; keep what it printed before dying (the 'journal')."""
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGKILL)
        rest = await self.proc.stdout.read()
        await self.proc.wait()
        self.lines += [json.loads(line) for line in rest.decode().splitlines()]

    @property
    def progress(self) -> list[float]:
        return [line["progress"] for line in self.lines if line["kind"] == "RunProgress"]

    @property
    def offset(self) -> int:
        return int([line["offset"] for line in self.lines if line["kind"] == "RunProgress"][-1])

    def spec(self) -> JobSpec:
        return JobSpec("job", "counter", {}, self.workdir)


def progress_of(rec: Recorder) -> list[float]:
    return [e.progress for e in rec.events if isinstance(e, RunProgress)]


def expected_progress(count: int) -> list[float]:
    return [i / (count + 1) for i in range(1, count + 1)]


async def wait_for(check: Any) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not check():
            await asyncio.sleep(0.02)


async def test_job_outlives_its_runner_and_is_adopted_with_the_progress_resumed(tmp_path: Path) -> None:
    host = await Host.start(tmp_path, COUNT, 0.1, 0)
    await host.read_until(3)
    await host.kill()
    record = RunRecord.read(RunFiles.of_workdir(host.workdir))
    assert record is not None and record.wrapper_alive()  # the job kept running without its runner
    rec = Recorder()
    runner = JobRunner(counter_registry(COUNT, 0.1, 0), progress_interval=0.0)
    assert await runner.adopt(host.spec(), rec, offset=host.offset) is Adoption.RUNNING
    end = await rec.terminal()
    assert isinstance(end, RunSucceeded) and end.output_files == ("model.txt",)
    resumed = progress_of(rec)
    assert host.progress + resumed == expected_progress(COUNT)  # nothing lost, nothing repeated
    assert pid_gone(record.wrapper_pid) and pid_gone(record.job_pid)


async def test_a_job_printing_past_its_log_bound_is_adopted_with_each_progress_once(tmp_path: Path) -> None:
    """80 steps of 1000 filler bytes each into logs bound to 16 KiB: they rotate several times, before and
    after the kill, and the logical resume offset still finds the next progress line."""
    count, limit = 80, 16 * 1024
    host = await Host.start(tmp_path, count, 0.05, 0, 1000, limit)
    files = RunFiles.of_workdir(host.workdir)
    await host.read_until(40)
    await host.kill()
    assert host.offset > 2 * limit  # a logical offset: past what the files can hold
    rec = Recorder()
    runner = JobRunner(counter_registry(count, 0.05, 0, 1000), progress_interval=0.0, log_max_bytes=limit)
    assert await runner.adopt(host.spec(), rec, offset=host.offset) is Adoption.RUNNING
    peak = 0
    async with asyncio.timeout(TIMEOUT):
        while not rec.of(RunSucceeded):
            peak = max(peak, disk_use(files.stdout))
            await asyncio.sleep(0.01)
    assert host.progress + progress_of(rec) == expected_progress(count)  # nothing lost, nothing repeated
    assert peak <= 2 * limit and disk_use(files.stdout) <= 2 * limit
    assert max(read_bases(files.stdout).values()) >= count * 1000 - 2 * limit  # it did rotate, to the end
    assert isinstance(rec.events[-1], RunSucceeded) and rec.events[-1].output_files == ("model.txt",)


async def test_a_job_whose_wrapper_was_killed_while_no_runner_watched_ends_and_is_lost(
    tmp_path: Path,
) -> None:
    """The wrapper owns the job's output pipes: without it the job's next write ends it (no orphan is left
    running), and the adoption reports the run lost."""
    host = await Host.start(tmp_path, 1000, 0.05, 0)
    await host.read_until(1)
    await host.kill()
    record = RunRecord.read(RunFiles.of_workdir(host.workdir))
    assert record is not None
    os.kill(record.wrapper_pid, signal.SIGKILL)
    await wait_for(lambda: pid_gone(record.job_pid))
    rec = Recorder()
    runner = JobRunner(counter_registry(1000, 0.05, 0), progress_interval=0.0)
    assert await runner.adopt(host.spec(), rec, offset=host.offset) is Adoption.LOST
    end = rec.events[-1]
    assert isinstance(end, RunFailed) and end.code is ErrorCode.LOST and end.recoverable
    assert RunScope(record.pgid, record.token).members() == []


@pytest.mark.parametrize("code", [0, 3])
async def test_job_that_ended_while_no_runner_watched_reports_its_real_outcome(
    tmp_path: Path, code: int
) -> None:
    host = await Host.start(tmp_path, 4, 0.05, code)
    await host.read_until(1)
    await host.kill()
    files = RunFiles.of_workdir(host.workdir)
    await wait_for(files.exit.exists)
    rec = Recorder()
    runner = JobRunner(counter_registry(4, 0.05, code), progress_interval=0.0)
    assert await runner.adopt(host.spec(), rec, offset=host.offset) is Adoption.ENDED
    end = rec.events[-1]
    if code == 0:
        assert isinstance(end, RunSucceeded) and end.output_files == ("model.txt",)
    else:
        assert isinstance(end, RunFailed) and end.code is ErrorCode.EXIT_NONZERO
        assert "exit code 3" in end.message and "counted" in end.message  # stderr tail from the file
    assert host.progress + progress_of(rec) == expected_progress(4)
    assert runner.running == []


async def test_a_reused_pid_is_not_taken_for_the_job(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "sleeper")
    files = RunFiles.of_workdir(spec.workdir)
    files.directory.mkdir(parents=True)
    start = process_start_time(os.getpid())
    assert start is not None
    # this very process has the recorded pid, but it started at another time: not the job's wrapper
    RunRecord(os.getpid(), start + 1, os.getpid(), start + 1, os.getpgid(0), "t", 0.0).write(files)
    rec = Recorder()
    assert await JobRunner(make_registry()).adopt(spec, rec) is Adoption.LOST
    end = rec.events[-1]
    assert isinstance(end, RunFailed) and end.code is ErrorCode.LOST and end.recoverable
    assert f"wrapper pid {os.getpid()} is gone" in end.message


async def test_a_job_without_any_record_is_lost(tmp_path: Path) -> None:
    rec = Recorder()
    assert await JobRunner(make_registry()).adopt(make_spec(tmp_path, "sleeper"), rec) is Adoption.LOST
    end = rec.events[-1]
    assert isinstance(end, RunFailed) and end.code is ErrorCode.LOST and "no record" in end.message


async def test_stopping_an_adopted_job_leaves_no_process(tmp_path: Path) -> None:
    host = await Host.start(tmp_path, 1000, 0.1, 0)
    await host.read_until(1)
    await host.kill()
    record = RunRecord.read(RunFiles.of_workdir(host.workdir))
    assert record is not None
    rec = Recorder()
    runner = JobRunner(counter_registry(1000, 0.1, 0), progress_interval=0.0)
    assert await runner.adopt(host.spec(), rec, offset=host.offset) is Adoption.RUNNING
    async with asyncio.timeout(TIMEOUT):
        assert await runner.stop("job", 1.0) is True
    assert isinstance(rec.events[-1], RunStopped)
    assert pid_gone(record.wrapper_pid) and pid_gone(record.job_pid)
    assert RunScope(record.pgid, record.token).members() == []


async def test_with_worker_lifetime_keeps_pipes_and_stops_the_group(tmp_path: Path) -> None:
    runner = JobRunner(counter_registry(1000, 0.05, 0), progress_interval=0.0, job_lifetime="with_worker")
    rec = Recorder()
    await runner.start(make_spec(tmp_path, "counter"), rec)
    await rec.first_progress()
    assert runner.resume_offset("j1") is None  # no files: nothing to resume from
    assert not RunFiles.of_workdir(tmp_path / "j1").directory.exists()
    async with asyncio.timeout(TIMEOUT):
        assert await runner.stop("j1", 1.0) is True
    assert isinstance(rec.events[-1], RunStopped)


def test_an_unknown_lifetime_is_refused() -> None:
    with pytest.raises(ValueError, match="job_lifetime"):
        JobRunner(make_registry(), job_lifetime="forever")  # type: ignore[arg-type]
