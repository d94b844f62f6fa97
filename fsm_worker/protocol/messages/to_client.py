"""Messages a worker sends to a client: the bid answer, the numbered job events, the head, errors and the
RTC answer."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from fsm_worker.protocol.messages import checks
from fsm_worker.protocol.messages.base import Message
from fsm_worker.protocol.messages.values import JobError, JobResult, Metrics


@attrs.frozen
class JobResponse(Message):
    TYPE: ClassVar[str] = "job_response"
    job_id: str = attrs.field(validator=checks.identifier)
    accepted: bool
    estimated_duration_minutes: float | None = None
    reason: str | None = None
    details: tuple[str, ...] | None = None
    #: Issue 12: accepted into the worker's queue (no slot yet), its 1-based place and estimated start.
    queued: bool | None = None
    queue_position: int | None = attrs.field(default=None, validator=checks.opt_positive)
    estimated_start_seconds: float | None = attrs.field(default=None, validator=checks.opt_non_negative)


@attrs.frozen
class JobCancelled(Message):
    TYPE: ClassVar[str] = "job_cancelled"
    CONSTANTS: ClassVar[dict[str, Any]] = {"status": "cancelled", "cleanup_complete": True}
    job_id: str = attrs.field(validator=checks.identifier)
    seq: int | None = None


@attrs.frozen
class ReservationExpired(Message):
    TYPE: ClassVar[str] = "reservation_expired"
    job_id: str = attrs.field(validator=checks.identifier)


@attrs.frozen
class JobStatus(Message):
    TYPE: ClassVar[str] = "job_status"
    job_id: str = attrs.field(validator=checks.identifier)
    status: str
    progress: float = attrs.field(validator=checks.fraction)
    message: str = attrs.field(validator=checks.bounded_text)
    seq: int | None = None
    metrics: Metrics | None = None
    #: With ``status="queued"`` (issue 12): the job's 1-based place in the worker's queue and estimated start.
    queue_position: int | None = attrs.field(default=None, validator=checks.opt_positive)
    estimated_start_seconds: float | None = attrs.field(default=None, validator=checks.opt_non_negative)


@attrs.frozen
class JobComplete(Message):
    TYPE: ClassVar[str] = "job_complete"
    CONSTANTS: ClassVar[dict[str, Any]] = {"status": "completed", "progress": 1.0}
    job_id: str = attrs.field(validator=checks.identifier)
    result: JobResult
    seq: int | None = None
    metrics: Metrics | None = None
    #: True when the client's `job_stop` ended the run early; the outputs are kept and downloadable.
    stopped_early: bool | None = None


@attrs.frozen
class JobFailed(Message):
    TYPE: ClassVar[str] = "job_failed"
    CONSTANTS: ClassVar[dict[str, Any]] = {"status": "failed"}
    job_id: str = attrs.field(validator=checks.identifier)
    error: JobError
    seq: int | None = None


@attrs.frozen
class AppError(Message):
    TYPE: ClassVar[str] = "app_error"
    KEEP_NULL: ClassVar[frozenset[str]] = frozenset({"job_id"})
    code: str
    message: str
    job_id: str | None = None


@attrs.frozen
class JobHead(Message):
    """Worker → client, after the events a `job_sync` with `upto_seq` asked for: the job's last `seq`.

    Events reach a client in the order the worker sent them, so every event up to `last_seq` that was not lost is
    already there when this arrives: the ones still missing are lost and worth asking for.
    """

    TYPE: ClassVar[str] = "job_head"
    job_id: str = attrs.field(validator=checks.identifier)
    last_seq: int = attrs.field(validator=checks.non_negative)
    upto_seq: int = attrs.field(validator=checks.non_negative)


@attrs.frozen
class RtcAnswer(Message):
    TYPE: ClassVar[str] = "rtc_answer"
    job_id: str = attrs.field(validator=checks.identifier)
    sdp: str
    options: dict[str, Any] = attrs.field(factory=dict)


#: Job events carry a per-job sequence number so a client can detect loss and ask for a replay (`job_sync`).
JOB_EVENT_TYPES = (JobStatus, JobComplete, JobFailed, JobCancelled)
JobEvent = JobStatus | JobComplete | JobFailed | JobCancelled
