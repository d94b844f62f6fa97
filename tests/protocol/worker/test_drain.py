"""The drain in the core (issue 9): `Drain` carries the policy, the core holds the drain's deadlines as data and
says `Drained` exactly once, when nothing is held or, with a reason, when its last bound passes."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from fsm_worker.protocol.worker.coordinator import JobCoordinator
from fsm_worker.protocol.worker.events import (
    Drain,
    InputsReady,
    RunStarted,
    RunStopped,
    RunSucceeded,
    Started,
    TimerFired,
)
from fsm_worker.protocol.worker.instructions import Drained, Instruction, PruneJobDirs, StopRun
from fsm_worker.protocol.worker.slots import Slot
from fsm_worker.protocol.worker.states import Intake, WorkerState, WorkerStatus
from fsm_worker.protocol.worker.values import DRAIN_MARGIN, replay_fingerprint

from .conftest import CAPS, CONFIG, Driver, sent

TIMEOUT, GRACE = 300.0, 5.0


class DrainDriver(Driver):
    def __init__(self, gpus: int = 1, **config: Any) -> None:
        super().__init__()
        slots = tuple(Slot(i, (i,), 8192) for i in range(gpus))
        settings = {"shutdown_timeout": TIMEOUT, "kill_grace": GRACE, **config}
        self.core = JobCoordinator(CAPS, attrs.evolve(CONFIG, **settings), slots=slots)

    def run(self, job_id: str = "job-1", sender: str = "client") -> None:
        """`job_id`'s run is going."""
        self.request(sender, job_id=job_id)
        self.assign(sender, job_id=job_id)
        self.feed(InputsReady(job_id))
        self.feed(RunStarted(job_id))


def intake(d: Driver) -> Intake:
    """The intake's state now (a call: each read is fresh for the type checker)."""
    return d.core.intake


def drained(out: list[Instruction]) -> list[Drained]:
    return [item for item in out if isinstance(item, Drained)]


def test_an_idle_worker_is_drained_at_once() -> None:
    d = DrainDriver()
    assert d.feed(Drain()) == [Drained()]
    assert intake(d) is Intake.DRAINED and d.core.next_deadline() is None


def test_the_finish_policy_waits_for_the_run_and_then_says_drained_last() -> None:
    d = DrainDriver()
    d.run()
    assert d.feed(Drain()) == []
    assert intake(d) is Intake.DRAINING and d.core.next_deadline() == TIMEOUT
    out = d.feed(RunSucceeded("job-1", 1.0, None), at=10.0)
    assert sent(out)[0][1]["app_message_type"] == "job_complete"
    assert out[-1] == Drained() and len(drained(out)) == 1
    assert intake(d) is Intake.DRAINED and d.core.status is WorkerStatus.AVAILABLE


@pytest.mark.parametrize(("policy", "event"), [("cancel", Drain()), ("finish", Drain(cancel_running=True))])
def test_the_cancel_policy_or_a_drain_that_cancels_stops_the_run(policy: str, event: Drain) -> None:
    d = DrainDriver(shutdown_policy=policy)
    d.run()
    assert d.feed(event) == [StopRun("job-1")]
    assert d.core.job_state("job-1") is WorkerState.STOPPING_FOR_SHUTDOWN
    out = d.feed(RunStopped("job-1"))
    assert sent(out)[0][1]["error"]["code"] == "WORKER_SHUTDOWN" and out[-1] == Drained()


def test_a_drain_that_finishes_overrides_the_cancel_policy() -> None:
    d = DrainDriver(shutdown_policy="cancel")
    d.run()
    assert d.feed(Drain(cancel_running=False)) == []
    assert d.core.job_state("job-1") is WorkerState.RUNNING


def test_past_shutdown_timeout_the_run_is_stopped_and_the_last_bound_is_armed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = DrainDriver()
    d.run()
    d.feed(Drain())
    assert d.feed(TimerFired(), at=TIMEOUT - 1) == []
    out = d.feed(TimerFired(), at=TIMEOUT)
    assert out == [StopRun("job-1")] and intake(d) is Intake.OVERDUE
    assert "the current job did not end within 300 s; stopping it" in caplog.text
    assert d.core.next_deadline() == TIMEOUT + GRACE + DRAIN_MARGIN
    out = d.feed(RunStopped("job-1"), at=TIMEOUT + 1)
    assert sent(out)[0][1]["error"]["code"] == "WORKER_SHUTDOWN" and out[-1] == Drained()
    assert d.core.drain_deadline is None  # left: the failed job's retention


def test_a_run_that_outlives_the_last_bound_is_given_up_with_a_reason_once() -> None:
    d = DrainDriver()
    d.run()
    d.feed(Drain())
    d.feed(TimerFired(), at=TIMEOUT)
    assert d.feed(TimerFired(), at=TIMEOUT + GRACE + DRAIN_MARGIN - 0.5) == []
    out = d.feed(TimerFired(), at=TIMEOUT + GRACE + DRAIN_MARGIN)
    ((given_up,),) = [drained(out)]
    assert given_up.reason is not None and "job-1 (busy.stopping.shutdown)" in given_up.reason
    assert intake(d) is Intake.DRAINED and d.core.next_deadline() is None
    out = d.feed(RunStopped("job-1"), at=TIMEOUT + 100)  # it ends after all: told, but no second `Drained`
    assert sent(out)[0][1]["error"]["code"] == "WORKER_SHUTDOWN" and drained(out) == []


def test_drained_is_said_exactly_once_whatever_follows() -> None:
    d = DrainDriver()
    outs = [d.feed(Drain())]
    outs.append(d.feed(Drain(cancel_running=True)))  # a second Ctrl+C after the drain is over
    outs.append(d.request())  # refused: draining
    outs.append(d.feed(TimerFired(), at=10 * TIMEOUT))
    assert [len(drained(out)) for out in outs] == [1, 0, 0, 0]
    assert sent(outs[2])[0][1]["reason"] == "draining"


def test_a_second_drain_stops_the_run_and_keeps_the_first_deadline() -> None:
    d = DrainDriver()
    d.run()
    d.feed(Drain())
    assert d.feed(Drain(cancel_running=True), at=100.0) == [StopRun("job-1")]
    assert intake(d) is Intake.DRAINING and d.core.next_deadline() == TIMEOUT
    assert d.feed(TimerFired(), at=TIMEOUT) == []  # already being stopped: nothing more to stop
    assert intake(d) is Intake.OVERDUE


def test_a_drain_releases_queued_and_reserved_jobs_and_waits_for_the_running_one() -> None:
    d = DrainDriver(gpus=2)
    d.run("a", "alice")  # slot 0: running
    d.request("bob", job_id="b")  # slot 1: reserved
    d.request("carol", job_id="c", queue=True)  # queued
    d.request("dave", job_id="q", queue=True)
    d.assign("dave", job_id="q")  # queued, assigned
    out = d.feed(Drain())
    told = [(to, m["app_message_type"]) for to, m in sent(out) if m["app_message_type"] != "job_status"]
    assert told == [("carol", "reservation_expired"), ("dave", "job_failed"), ("bob", "reservation_expired")]
    assert drained(out) == [] and d.core.job_state("a") is WorkerState.RUNNING
    out = d.feed(RunSucceeded("a", 1.0, None))
    assert out[-1] == Drained() and d.core.status is WorkerStatus.AVAILABLE


def test_started_names_the_jobs_whose_directories_stay() -> None:
    d = DrainDriver(gpus=2)
    d.run("a", "alice")
    d.feed(RunSucceeded("a", 1.0, None))  # retained with its files
    d.request("bob", job_id="b")  # reserved only: nothing on disk yet
    d.request("carol", job_id="c")
    d.assign("carol", job_id="c")
    assert d.feed(Started()) == [PruneJobDirs(("c", "a"))]
    assert DrainDriver().feed(Started()) == [PruneJobDirs(())]


def test_the_drains_settings_stay_out_of_the_journal_fingerprint() -> None:
    """Changing them never refuses a restart; every other timing is part of it."""
    fingerprint = replay_fingerprint(CONFIG)
    assert {"shutdown_policy", "shutdown_timeout", "kill_grace"}.isdisjoint(fingerprint)
    assert fingerprint == {
        name: value
        for name, value in attrs.asdict(CONFIG).items()
        if name not in ("shutdown_policy", "shutdown_timeout", "kill_grace")
    }


def test_a_process_started_on_a_journal_killed_mid_drain_takes_jobs_again() -> None:
    """The replayed events end inside a drain (the old process was killed waiting for its run): `Started`, the
    new process's first event, re-opens intake; the drained jobs' fate stands and no `Drained` follows."""
    d = DrainDriver(gpus=2)
    d.run("a", "alice")
    d.feed(Drain())  # finish policy: the run goes on, new jobs are refused
    refused = d.request("bob", job_id="b")
    assert [m.get("reason") for _, m in sent(refused)] == ["draining"]
    out = d.feed(Started())
    assert intake(d) is Intake.OPEN and d.core.drain_deadline is None and drained(out) == []
    accepted = d.request("bob", job_id="b2")
    assert [m.get("accepted") for _, m in sent(accepted) if m["app_message_type"] == "job_response"] == [True]
    out = d.feed(RunSucceeded("a", 1.0, None))
    assert drained(out) == [] and d.core.job_state("a") is not WorkerState.RUNNING


def test_started_keeps_an_open_intake_open() -> None:
    d = DrainDriver()
    d.feed(Started())
    assert intake(d) is Intake.OPEN and d.core.drain_deadline is None
