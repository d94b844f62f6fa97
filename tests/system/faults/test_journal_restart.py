"""A journaled worker SIGKILLed and restarted under the same id and workdir (real processes, real server).

What the journal brings back is proven on the wire: the reservation a client holds, and a running job: its
detached process outlives the worker, is adopted again, and its end (or the end it reached while the worker was
down) is reported once, with every seq exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest
from rooms import TIMEOUT, Room
from support.job_keys import keyed, keyed_request

from fsm_worker.client import ClientTimeouts, Job, JobClient
from fsm_worker.protocol.client import Outcome
from fsm_worker.protocol.messages import (
    JOB_EVENT_TYPES,
    JobCancelled,
    JobComplete,
    JobFailed,
    JobStatus,
    Message,
)
from fsm_worker.shells.runner.joblog import read_bases
from fsm_worker.worker.doctor import JOURNAL_FILE

from .conftest import WorkerProcess, probe


async def test_a_held_reservation_survives_a_sigkill(room: Room, tmp_path: Path) -> None:
    workdir = tmp_path / "phoenix"
    worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir, journal=True)
    try:
        peer, inbox = await room.peer("holder")
        request = keyed_request("j1", "train-demo")
        assert (await peer.send("phoenix", request)).delivered
        assert (await inbox.next_of("job_response"))["accepted"] is True
        await worker.kill()
        worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir, journal=True)
        # The restarted worker still holds j1 for its client: a rival is refused, the holder's assignment taken.
        rival, rival_inbox = await room.peer("rival")
        assert (await rival.send("phoenix", {**request, "job_id": "j2"})).delivered
        assert (await rival_inbox.next_of("job_response"))["accepted"] is False
        assignment = keyed("job_assignment", "j1")
        assert (await peer.send("phoenix", assignment)).delivered
        assert await probe(peer, inbox, "phoenix") == []  # taken without a word, as before the restart
        cancel = keyed("job_cancel", "j1")
        # The job is this client's: its cancel ends it, numbered as the job's first event.
        assert (await peer.send("phoenix", cancel)).delivered
        cancelled = await inbox.next_of("job_cancelled")
        assert cancelled["job_id"] == "j1" and cancelled["seq"] == 1
    finally:
        await worker.kill()


def _tracing_client(room: Room, received: list[Message]) -> JobClient:
    """A client whose every received protocol message is appended to `received` (a restart window wider
    than the restart)."""
    client = JobClient(
        room.url,
        room.token,
        loopback_only=True,
        timeouts=ClientTimeouts(liveness=0.5, worker_gone=30.0),
        trace=lambda way, _peer, message: received.append(message) if way == "received" else None,
    )
    room.closers.append(client.close)
    return client


async def _running_ticker(client: JobClient, steps_seen: int) -> Job:
    await client.connect()
    job = await client.submit("ticker")  # 12 ticks 0.25 s apart
    async with asyncio.timeout(TIMEOUT):
        async for event in job.events():
            if isinstance(event, JobStatus) and event.progress >= steps_seen / 13:
                return job
    raise AssertionError("the ticker ended before it was seen running")


def _journal_rows(workdir: Path) -> int:
    with contextlib.closing(sqlite3.connect(workdir / JOURNAL_FILE)) as db:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])


def _job_seqs(received: list[Message], job_id: str) -> list[int]:
    return [m.seq for m in received if isinstance(m, JOB_EVENT_TYPES) and m.job_id == job_id and m.seq]


async def test_a_running_job_outlives_a_sigkill_and_is_reported_once(room: Room, tmp_path: Path) -> None:
    workdir = tmp_path / "phoenix"
    worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir, journal=True)
    try:
        received: list[Message] = []
        client = _tracing_client(room, received)
        job = await _running_ticker(client, steps_seen=2)
        seen_before_kill = len(received)
        worker.process.kill()  # a crash of the worker alone: its detached job keeps running
        await worker.process.wait()
        [ticker] = worker.pid_file.read_text().splitlines()
        os.kill(int(ticker.split()[0]), 0)  # still alive while no worker watches it
        worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir, journal=True)
        async with asyncio.timeout(TIMEOUT):
            outcome = await job.result(tmp_path / "out")
        assert (tmp_path / "out" / "ticks.txt").read_text() == "12 ticks\n"
        assert [f.name for f in outcome.files] == ["ticks.txt"]
        # The client's data channel went with the killed worker (SCTP has not noticed): the restarted worker says
        # so (`CHANNEL_LOST`), and the download goes over a new channel without waiting for a timeout.
        assert worker.pid_file.read_text().splitlines() == [ticker]  # adopted, never started a second time
        seqs = _job_seqs(received, job.job_id)
        # On the wire each seq exactly once, none missing (a seq the restart left unsent comes when asked for).
        assert sorted(seqs) == list(range(1, len(seqs) + 1))
        assert [e.seq for e in job.history] == seqs
        assert [type(m) for m in received if isinstance(m, JobComplete)] == [JobComplete]
        progress = [e.progress for e in job.history if isinstance(e, JobStatus) and e.status == "running"]
        assert progress == sorted(set(progress))  # no progress repeated by the adoption
        assert any(isinstance(m, JobStatus) for m in received[seen_before_kill:])  # progress after the kill
    finally:
        await worker.kill()


def _tick(status: JobStatus) -> int:
    """The ticker's step in a status message ("tick 7/60"); 0 for any other status."""
    words = status.message.split()
    return int(words[1].split("/")[0]) if len(words) == 2 and words[0] == "tick" else 0


async def test_a_job_filling_its_bounded_logs_is_adopted_with_progress_once(
    room: Room, tmp_path: Path
) -> None:
    """`chatty-ticker` writes 70 x 1 KB of filler into logs bound to 24 KiB: they rotate twice before the
    SIGKILL, so the first 24 KiB are gone; the restarted worker reads from the earliest kept byte and resumes at
    the logical offset it journaled: the first progress after the restart is the tick after the last one before
    it (none repeated, none skipped), and the logs stay bounded."""
    workdir, limit = tmp_path / "phoenix", 24 * 1024
    worker = await WorkerProcess.start(
        room.url, room.token, "phoenix", workdir, journal=True, log_max_bytes=limit
    )
    try:
        received: list[Message] = []
        client = _tracing_client(room, received)
        await client.connect()
        job = await client.submit("chatty-ticker")
        async with asyncio.timeout(TIMEOUT):
            async for event in job.events():
                if isinstance(event, JobStatus) and _tick(event) >= 50:  # > 50 KB written
                    break
        worker.process.kill()
        await worker.process.wait()
        at_kill = len(received)
        [stdout_log] = workdir.rglob(".run/stdout.log")
        rotated = stdout_log.with_name("stdout.log.1")
        assert rotated.stat().st_size == limit and stdout_log.stat().st_size <= limit  # rotated, bounded
        assert min(read_bases(stdout_log).values()) == limit  # the first file is gone
        worker = await WorkerProcess.start(
            room.url, room.token, "phoenix", workdir, journal=True, log_max_bytes=limit
        )
        async with asyncio.timeout(TIMEOUT):
            outcome = await job.result(tmp_path / "out")
        assert (tmp_path / "out" / "ticks.txt").read_text() == "70 ticks\n" and len(outcome.files) == 1
        seqs = _job_seqs(received, job.job_id)
        assert sorted(seqs) == list(range(1, len(seqs) + 1)) and [e.seq for e in job.history] == seqs
        progress = [e.progress for e in job.history if isinstance(e, JobStatus) and e.status == "running"]
        assert progress == sorted(set(progress))  # nothing repeated across the restart

        def ticks(messages: list[Message]) -> list[int]:
            return [_tick(m) for m in messages if isinstance(m, JobStatus) and _tick(m) > 0]

        before, after = ticks(received[:at_kill]), ticks(received[at_kill:])
        assert after and after[0] == before[-1] + 1, (before[-3:], after[:3])
        assert stdout_log.stat().st_size + rotated.stat().st_size <= 2 * limit
    finally:
        await worker.kill()


async def test_a_job_that_ended_while_the_worker_was_down_reports_its_outcome_once(
    room: Room, tmp_path: Path
) -> None:
    workdir = tmp_path / "phoenix"
    worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir, journal=True)
    try:
        received: list[Message] = []
        client = _tracing_client(room, received)
        job = await _running_ticker(client, steps_seen=1)
        worker.process.kill()
        await worker.process.wait()
        async with asyncio.timeout(TIMEOUT):  # the wrapper records the job's exit status
            while not list(workdir.glob("jobs/*/.run/exit.json")):
                await asyncio.sleep(0.1)
        worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir, journal=True)
        async with asyncio.timeout(TIMEOUT):
            outcome = await job.result(tmp_path / "out")
        assert (tmp_path / "out" / "ticks.txt").read_text() == "12 ticks\n"
        assert [f.name for f in outcome.files] == ["ticks.txt"]
        assert len(worker.pid_file.read_text().splitlines()) == 1
        seqs = _job_seqs(received, job.job_id)
        # On the wire each seq exactly once: the client's probes ask how far the job goes (`job_head`) and then
        # only for what it lacks, so an event still on its way is never replayed.
        assert sorted(seqs) == list(range(1, len(seqs) + 1))
        assert [e.seq for e in job.history] == seqs
        assert len([m for m in received if isinstance(m, JobComplete | JobFailed)]) == 1
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
        request = keyed_request("j1", "train-demo")
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
        assert (await peer.send("phoenix", keyed("job_assignment", "j1"))).delivered
        assert (await peer.send("phoenix", keyed("job_cancel", "j1"))).delivered
        cancelled = await inbox.next_of("job_cancelled")
        assert cancelled["seq"] == 1
    finally:
        await worker.kill()


async def test_a_sigterm_for_an_upgrade_leaves_the_job_running_and_a_restart_adopts_it(
    room: Room, tmp_path: Path
) -> None:
    """SIGTERM (systemd's stop/restart) with detached jobs: the worker exits at once, its job keeps running,
    the journal is kept; the worker started again adopts the job and the client gets its end, each seq once."""
    workdir = tmp_path / "phoenix"
    worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir, journal=True)
    try:
        received: list[Message] = []
        client = _tracing_client(room, received)
        job = await _running_ticker(client, steps_seen=2)
        worker.process.terminate()
        async with asyncio.timeout(TIMEOUT):
            assert await worker.process.wait() == 0  # a clean exit, not waiting for the job
        [ticker] = worker.pid_file.read_text().splitlines()
        os.kill(int(ticker.split()[0]), 0)  # still running while no worker watches it
        assert not list(workdir.glob("jobs/*/.run/exit.json"))  # not ended (and not killed) by the stop
        assert _journal_rows(workdir) > 0  # kept for the restart
        worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir, journal=True)
        async with asyncio.timeout(TIMEOUT):
            outcome = await job.result(tmp_path / "out")
        assert (tmp_path / "out" / "ticks.txt").read_text() == "12 ticks\n"
        assert [f.name for f in outcome.files] == ["ticks.txt"]
        assert worker.pid_file.read_text().splitlines() == [ticker]  # adopted, never started a second time
        seqs = _job_seqs(received, job.job_id)
        assert sorted(seqs) == list(range(1, len(seqs) + 1))
        assert [type(m) for m in received if isinstance(m, JobComplete | JobFailed)] == [JobComplete]
    finally:
        await worker.kill()


async def test_a_sigterm_with_jobs_that_live_with_the_worker_still_stops_them(
    room: Room, tmp_path: Path
) -> None:
    """`job_lifetime = "with_worker"`: SIGTERM is the graceful shutdown it always was (the job is let finish,
    the client gets its end before the worker exits, the journal is emptied)."""
    workdir = tmp_path / "phoenix"
    worker = await WorkerProcess.start(
        room.url, room.token, "phoenix", workdir, journal=True, lifetime="with_worker"
    )
    try:
        received: list[Message] = []
        client = _tracing_client(room, received)
        job = await _running_ticker(client, steps_seen=2)
        worker.process.terminate()
        async with asyncio.timeout(TIMEOUT):
            assert await worker.process.wait() == 0
            terminal = await job.wait()
        assert isinstance(terminal, JobComplete)  # finished before the worker exited (shutdown_policy=finish)
        [ticker] = worker.pid_file.read_text().splitlines()
        with pytest.raises(ProcessLookupError):
            os.kill(int(ticker.split()[0]), 0)
        assert _journal_rows(workdir) == 0
    finally:
        await worker.kill()


def _record(workdir: Path) -> dict[str, int]:
    [record] = workdir.glob("jobs/*/.run/record.json")
    return dict(json.loads(record.read_text()))


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed worker's children are reparented; who reaps them
    depends on the machine's init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_a_job_gone_without_a_trace_while_the_worker_was_down_is_reported_lost_once(
    room: Room, tmp_path: Path
) -> None:
    """The worker and then the job's whole process group are SIGKILLed (no exit status is written): the
    restarted worker finds no process of the job and reports `job_failed` `LOST` (recoverable), once."""
    workdir = tmp_path / "phoenix"
    worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir, journal=True)
    try:
        received: list[Message] = []
        client = _tracing_client(room, received)
        job = await _running_ticker(client, steps_seen=1)
        worker.process.kill()
        await worker.process.wait()
        record = _record(workdir)
        os.killpg(record["pgid"], signal.SIGKILL)  # wrapper and job: nothing is left to record an exit status
        async with asyncio.timeout(TIMEOUT):
            while _alive(record["wrapper_pid"]) or _alive(record["job_pid"]):
                await asyncio.sleep(0.05)
        assert not list(workdir.glob("jobs/*/.run/exit.json"))
        worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir, journal=True)
        async with asyncio.timeout(TIMEOUT):
            terminal = await job.wait()
        assert isinstance(terminal, JobFailed)
        assert terminal.error.code == "LOST" and terminal.error.recoverable is True
        assert [m for m in received if isinstance(m, JobComplete | JobFailed)] == [terminal]  # once
        seqs = _job_seqs(received, job.job_id)
        assert sorted(seqs) == list(range(1, len(seqs) + 1))
    finally:
        await worker.kill()


async def test_an_adopted_job_is_cancelled_by_its_client_and_leaves_no_process(
    room: Room, tmp_path: Path
) -> None:
    workdir = tmp_path / "phoenix"
    worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir, journal=True)
    try:
        received: list[Message] = []
        client = _tracing_client(room, received)
        await client.connect()
        job = await client.submit("long-ticker")  # a minute of ticks
        async with asyncio.timeout(TIMEOUT):
            async for event in job.events():
                if isinstance(event, JobStatus) and event.status == "running":
                    break
        worker.process.kill()
        await worker.process.wait()
        record = _record(workdir)
        worker = await WorkerProcess.start(room.url, room.token, "phoenix", workdir, journal=True)
        async with asyncio.timeout(TIMEOUT):  # adopted: progress goes on
            async for event in job.events():
                if isinstance(event, JobStatus):
                    break
        async with asyncio.timeout(TIMEOUT):
            await job.cancel()
        assert job.outcome is Outcome.CANCELLED
        assert not _alive(record["job_pid"]) and not _alive(record["wrapper_pid"])
        assert [type(m) for m in received if isinstance(m, JobCancelled | JobComplete | JobFailed)] == [
            JobCancelled
        ]
        seqs = _job_seqs(received, job.job_id)
        assert sorted(seqs) == list(range(1, len(seqs) + 1))
    finally:
        await worker.kill()


async def test_a_job_that_lived_with_a_sigkilled_worker_is_reported_killed_once_after_the_restart(
    room: Room, tmp_path: Path
) -> None:
    """`job_lifetime = "with_worker"`: the run did not survive the crash, so the restored core fails it
    itself (`KILLED`, recoverable; protocol/worker/adoption.py) and nothing is adopted."""
    workdir = tmp_path / "phoenix"
    worker = await WorkerProcess.start(
        room.url, room.token, "phoenix", workdir, journal=True, lifetime="with_worker"
    )
    try:
        received: list[Message] = []
        client = _tracing_client(room, received)
        job = await _running_ticker(client, steps_seen=1)
        await worker.kill()  # the worker and its run: nothing of the job is left
        assert not list(workdir.glob("jobs/*/.run/record.json"))  # never detached
        worker = await WorkerProcess.start(
            room.url, room.token, "phoenix", workdir, journal=True, lifetime="with_worker"
        )
        async with asyncio.timeout(TIMEOUT):
            terminal = await job.wait()
        assert isinstance(terminal, JobFailed)
        assert (terminal.error.code, terminal.error.recoverable) == ("KILLED", True)
        assert terminal.error.message == "the worker restarted and the job's process did not survive it"
        assert [m for m in received if isinstance(m, JobComplete | JobFailed)] == [terminal]  # once
        seqs = _job_seqs(received, job.job_id)
        assert sorted(seqs) == list(range(1, len(seqs) + 1))
    finally:
        await worker.kill()
