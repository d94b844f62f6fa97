"""The worker's job summary and Prometheus counters, fed with real core instructions (no IO)."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from fsm_worker.protocol.messages import (
    JobCancelled,
    JobComplete,
    JobError,
    JobFailed,
    JobRequest,
    JobResult,
    JobStatus,
    Metrics,
)
from fsm_worker.protocol.worker.instructions import Send, StartRun
from fsm_worker.protocol.worker.states import Job
from fsm_worker.worker.metrics import WorkerMetrics
from fsm_worker.worker.summary import JobSummary

JOB = Job("job-1", "client", JobRequest("job-1", "train-demo"), assigned_at=0.0, estimated_duration_minutes=1)


def status(progress: float, loss: float | None = None) -> Send:
    metrics = Metrics(epoch=1, loss=loss) if loss is not None else None
    return Send("client", JobStatus("job-1", "running", progress, f"at {progress}", 2, metrics))


def samples(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_start_is_published_at_once_and_progress_at_most_every_interval() -> None:
    summary = JobSummary(interval=1.0)
    (started,) = summary.observe([StartRun(JOB)], now=10.0)
    assert started == {
        "job": {"run": 1, "job_type": "train-demo", "elapsed_seconds": 0.0, "status": "starting",
                "progress": 0.0, "message": ""},
    }  # fmt: skip
    assert summary.observe([status(0.1)], now=10.4) == []  # within the interval: held back
    (update,) = summary.observe([status(0.2, loss=0.5)], now=11.0)
    job: dict[str, Any] = update["job"]
    assert (
        job["progress"] == 0.2
        and job["elapsed_seconds"] == 1.0
        and job["metrics"] == {"epoch": 1, "loss": 0.5}
    )
    assert summary.observe([], now=11.2) == []  # nothing new


def test_the_end_is_published_at_once_with_outcome_and_duration() -> None:
    summary = JobSummary(interval=1.0)
    summary.observe([StartRun(JOB)], now=10.0)
    summary.observe([status(0.5)], now=10.1)
    (ended,) = summary.observe([Send("client", JobComplete("job-1", JobResult(0.1), 3))], now=14.5)
    assert ended == {
        "job": None,
        "last_job": {
            "run": 1,
            "job_type": "train-demo",
            "outcome": "completed",
            "duration_seconds": 4.5,
        },
    }


def test_messages_of_jobs_that_never_ran_change_nothing() -> None:
    summary = JobSummary()
    assert summary.observe([Send("client", JobCancelled("job-9"))], now=1.0) == []
    assert summary.observe([status(0.5)], now=2.0) == []


def test_jobs_are_counted_by_outcome_once_even_when_a_terminal_message_is_replayed() -> None:
    metrics = WorkerMetrics(slots=1, gpu_memory_mb=2)
    metrics.observe([StartRun(JOB)], now=100.0)
    assert samples(metrics)[("fsm_worker_slots_busy", ())] == 1
    failed = Send("client", JobFailed("job-1", JobError("EXIT_NONZERO", "boom", False), 4))
    metrics.observe([failed], now=130.0)
    metrics.observe([failed], now=140.0)  # a job_sync replay
    metrics.observe([Send("client", JobCancelled("job-2"))], now=150.0)  # a reservation cancelled: no run
    found = samples(metrics)
    assert found[("fsm_worker_jobs_total", (("outcome", "failed"),))] == 1
    assert found[("fsm_worker_jobs_total", (("outcome", "cancelled"),))] == 1
    assert found[("fsm_worker_job_duration_seconds_count", (("outcome", "failed"),))] == 1
    assert found[("fsm_worker_job_duration_seconds_sum", (("outcome", "failed"),))] == 30.0
    assert ("fsm_worker_job_duration_seconds_count", (("outcome", "cancelled"),)) not in found
    assert found[("fsm_worker_slots_busy", ())] == 0
    assert found[("fsm_worker_gpu_memory_bytes", ())] == 2 * 1024 * 1024


def test_the_summary_can_be_turned_off_while_counting_goes_on() -> None:
    metrics = WorkerMetrics(publish_summary=False)
    assert metrics.observe([StartRun(JOB)], now=1.0) == []
    assert samples(metrics)[("fsm_worker_runs_started_total", ())] == 1
