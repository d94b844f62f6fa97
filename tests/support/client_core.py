"""Shortcuts for the client core's tests: messages a worker would send, and a core with known settings."""

from __future__ import annotations

from fsm_worker.protocol.client import ClientJobCore, ClientTimeouts
from fsm_worker.protocol.messages import (
    JobCancelled,
    JobComplete,
    JobError,
    JobFailed,
    JobRequest,
    JobResponse,
    JobResult,
    JobStatus,
    Requirements,
)

JOB = "job-1"
KEY = "k" * 43
TIMEOUTS = ClientTimeouts(response=10.0, liveness=5.0, worker_gone=15.0, queue_keepalive=8.0)


def new_core(job_key: str | None = KEY) -> ClientJobCore:
    return ClientJobCore(JobRequest(JOB, "train-demo", {"epochs": 2}), job_key, TIMEOUTS)


def accept(estimate: float | None = 1.0) -> JobResponse:
    return JobResponse(JOB, True, estimated_duration_minutes=estimate)


def reject(reason: str = "busy") -> JobResponse:
    return JobResponse(JOB, False, reason=reason, details=("x",))


def status(seq: int) -> JobStatus:
    return JobStatus(JOB, "running", 0.5, f"step {seq}", seq=seq)


def complete(seq: int, stopped_early: bool | None = None) -> JobComplete:
    return JobComplete(JOB, JobResult(1.0), seq=seq, stopped_early=stopped_early)


def failed(seq: int) -> JobFailed:
    return JobFailed(JOB, JobError("BOOM", "it broke", False), seq=seq)


def cancelled(seq: int) -> JobCancelled:
    return JobCancelled(JOB, seq=seq)


def new_queue_core(job_key: str | None = KEY, gpus: int = 1) -> ClientJobCore:
    """A core whose request asks to queue when no worker can place it now."""
    request = JobRequest(JOB, "train-demo", {"epochs": 2}, Requirements(gpus=gpus), queue=True)
    return ClientJobCore(request, job_key, TIMEOUTS)


def queued(position: int, start: float | None) -> JobResponse:
    """An acceptance into the worker's queue (no slot free now)."""
    return JobResponse(JOB, True, 1.0, queued=True, queue_position=position, estimated_start_seconds=start)


def queued_status(seq: int, position: int, start: float | None = None) -> JobStatus:
    return JobStatus(
        JOB,
        "queued",
        0.0,
        f"queued at {position}",
        seq,
        queue_position=position,
        estimated_start_seconds=start,
    )
