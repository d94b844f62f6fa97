"""After a journal restore the core decides what becomes of each run it held (protocol/worker/adoption.py):
adopt it (`AdoptRun`, stopping it again if it was being stopped) when runs are detached, or end it through the
run-event rows when runs die with the worker. The host only carries the instructions out."""

from __future__ import annotations

from fsm_worker.protocol.worker.events import InputsReady, Restored, RunProgress, RunStarted, RunSucceeded
from fsm_worker.protocol.worker.instructions import AdoptRun, Advertise, CleanupJob, PublishResults
from fsm_worker.protocol.worker.states import WorkerState, WorkerStatus

from .conftest import Driver, others, sent


def started(driver: Driver, job_id: str = "job-1") -> None:
    driver.request(job_id=job_id, config={"epochs": 10})
    driver.assign(job_id=job_id)
    driver.feed(InputsReady(job_id))


def test_a_detached_running_job_is_adopted_at_its_journaled_offset(driver: Driver) -> None:
    started(driver)
    driver.feed(RunStarted("job-1"))
    driver.feed(RunProgress("job-1", 0.25, "a quarter", resume_offset=120))
    job = driver.job()
    out = driver.feed(Restored(resume_offsets={"job-1": 120, "gone": 7}))
    assert out == [AdoptRun(job, 120, None)]
    assert driver.core.state is WorkerState.RUNNING  # adopting changes nothing until the run reports
    done = driver.feed(RunSucceeded("job-1", 1.0, None), at=1.0)  # the adopted run's end, reported once
    assert [payload["app_message_type"] for _, payload in sent(done)] == ["job_complete"]


def test_a_starting_job_is_adopted_from_the_start_of_its_output(driver: Driver) -> None:
    started(driver)
    assert driver.core.state is WorkerState.STARTING
    assert others(driver.feed(Restored())) == [AdoptRun(driver.job(), 0, None)]


def test_a_run_being_stopped_is_adopted_and_stopped_again_the_same_way(driver: Driver) -> None:
    started(driver, "soft")
    driver.feed(RunStarted("soft"))
    driver.message("client", {"app_message_type": "job_stop", "job_id": "soft"})
    assert driver.core.state is WorkerState.STOPPING_EARLY
    job = driver.job()
    assert driver.feed(Restored()) == [AdoptRun(job, 0, stop=True)]


def test_a_run_being_cancelled_is_adopted_and_stopped_at_once(driver: Driver) -> None:
    started(driver)
    driver.feed(RunStarted("job-1"))
    driver.cancel()
    job = driver.job()
    assert driver.feed(Restored()) == [AdoptRun(job, 0, stop=False)]


def test_jobs_without_a_run_are_not_adopted(driver: Driver) -> None:
    driver.request(job_id="reserved")
    assert driver.feed(Restored()) == []
    assert driver.core.state is WorkerState.RESERVED


def test_a_running_job_whose_process_died_with_the_worker_fails_killed_once(driver: Driver) -> None:
    started(driver)
    driver.feed(RunStarted("job-1"))
    out = driver.feed(Restored(runs_survive=False, resume_offsets={"job-1": 5}))
    ((to, failed),) = sent(out)
    assert to == "client" and failed["app_message_type"] == "job_failed"
    assert failed["error"] == {
        "code": "KILLED",
        "message": "the worker restarted and the job's process did not survive it",
        "recoverable": True,
    }
    assert others(out) == [Advertise(WorkerStatus.AVAILABLE, None), PublishResults("job-1")]  # its logs
    assert driver.core.current_job is None
    assert driver.feed(Restored(runs_survive=False)) == []  # reported once


def test_a_cancel_in_progress_whose_process_died_ends_as_cancelled(driver: Driver) -> None:
    started(driver)
    driver.feed(RunStarted("job-1"))
    driver.cancel()
    out = driver.feed(Restored(runs_survive=False))
    assert [payload["app_message_type"] for _, payload in sent(out)] == ["job_cancelled"]
    assert others(out) == [Advertise(WorkerStatus.AVAILABLE, None), CleanupJob("job-1", reclaim=True)]
