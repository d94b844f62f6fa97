"""An adopted job's ZMQ side channel is bound again on the ports the job was given (real processes).

The stand-in trainer (``scripts/zmq_trainer.py``) speaks sleap-nn's channel: it connects to the worker's
ports and reports progress only there, so progress after an adoption proves the channel came back.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from support.jobs import SCRIPTS, TIMEOUT, Recorder, pid_gone
from support.zmq_jobs import zmq_registry

from fsm_worker.jobs import JobRunner, JobSpec, RunProgress, RunSucceeded
from fsm_worker.shells.runner.detached import RunFiles, RunRecord, read_channel
from fsm_worker.shells.runner.runner import Adoption

pytest.importorskip("zmq")

EPOCHS, STEPS, DELAY = 3, 25, 0.04


class Host:
    """A process holding a JobRunner that started one ``zmq-trainer`` job; prints its events."""

    def __init__(self, proc: asyncio.subprocess.Process, workdir: Path) -> None:
        self.proc, self.workdir, self.lines = proc, workdir, list[dict[str, Any]]()

    @classmethod
    async def start(cls, tmp_path: Path, epochs: int) -> Host:
        workdir = tmp_path / "job"
        (workdir / "inputs").mkdir(parents=True)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(SCRIPTS / "zmq_adopt_host.py"), str(workdir), str(epochs), str(STEPS),
            str(DELAY), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc, workdir)

    async def read_until(self, progress_events: int) -> None:
        assert self.proc.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            while len(self.progress) < progress_events:
                self.lines.append(json.loads(await self.proc.stdout.readline()))

    async def kill(self) -> None:
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGKILL)
        rest = await self.proc.stdout.read()
        await self.proc.wait()
        self.lines += [json.loads(line) for line in rest.decode().splitlines()]

    @property
    def progress(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["kind"] == "RunProgress"]

    def spec(self) -> JobSpec:
        return JobSpec("job", "zmq-trainer", {}, self.workdir)


async def adopt_after_kill(tmp_path: Path, epochs: int) -> tuple[Host, JobRunner, Recorder, RunRecord]:
    host = await Host.start(tmp_path, epochs)
    await host.read_until(3)
    await host.kill()
    files = RunFiles.of_workdir(host.workdir)
    record = RunRecord.read(files)
    assert record is not None and record.wrapper_alive()
    saved = read_channel(files)
    assert saved is not None and set(saved) == {"publish_port", "controller_port"}
    runner = JobRunner(zmq_registry(epochs, STEPS, DELAY), progress_interval=0.0)
    rec = Recorder()
    offset = host.progress[-1]["offset"]
    assert await runner.adopt(host.spec(), rec, offset=offset) is Adoption.RUNNING
    return host, runner, rec, record


async def test_an_adopted_job_reports_progress_over_its_zmq_channel_again(tmp_path: Path) -> None:
    host, _runner, rec, record = await adopt_after_kill(tmp_path, EPOCHS)
    end = await rec.terminal()
    assert isinstance(end, RunSucceeded) and end.metrics["zmq_stop"] == 0.0
    after = [e for e in rec.events if isinstance(e, RunProgress)]
    batches = [e for e in after if "loss" in e.metrics and "val/loss" not in e.metrics]
    assert len(batches) >= STEPS  # per-batch progress: only the channel carries it (stdout has none)
    assert any("val/loss" in e.metrics for e in after)  # and the epoch ends with their metrics
    values = [line["progress"] for line in host.progress] + [e.progress for e in after]
    assert values == sorted(values) and values[-1] > 0.9
    assert pid_gone(record.wrapper_pid) and pid_gone(record.job_pid)


async def test_a_graceful_stop_of_an_adopted_job_goes_over_its_zmq_controller(tmp_path: Path) -> None:
    _host, runner, rec, record = await adopt_after_kill(tmp_path, 1000)
    await rec.first_progress()
    async with asyncio.timeout(TIMEOUT):
        assert await runner.stop("job", graceful=True) is True
    end = rec.events[-1]
    # the trainer saw the controller's stop command (a SIGINT fallback would have killed it with rc 1)
    assert isinstance(end, RunSucceeded) and end.stopped_early and end.metrics["zmq_stop"] == 1.0
    assert pid_gone(record.wrapper_pid) and pid_gone(record.job_pid)
