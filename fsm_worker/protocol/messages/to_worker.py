"""Messages a client sends to a worker: the request, assignment, cancel, stop, sync and RTC offer."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from fsm_worker.protocol.messages import checks
from fsm_worker.protocol.messages.base import Message
from fsm_worker.protocol.messages.values import InputFile, Requirements

# Client → worker
#
# `job_key` is the client's per-job secret: `job_request` carries only its sha256 (`job_key_sha256`, so losing
# bidders never learn it); every later message about the job that reads or changes it presents the key itself.


@attrs.frozen
class JobRequest(Message):
    TYPE: ClassVar[str] = "job_request"
    job_id: str = attrs.field(validator=checks.identifier)
    job_type: str = attrs.field(validator=checks.identifier)
    config: dict[str, Any] = attrs.field(factory=dict)
    requirements: Requirements = attrs.field(factory=Requirements)
    dataset_info: dict[str, Any] = attrs.field(factory=dict)
    job_key_sha256: str | None = attrs.field(default=None, validator=checks.sha256_hex)
    inputs: tuple[InputFile, ...] | None = None
    #: Issue 12: when no slot is free now, wait in the worker's queue instead of being refused `busy`.
    queue: bool = False
    OMIT_DEFAULT: ClassVar[frozenset[str]] = frozenset({"queue"})


@attrs.frozen
class JobAssignment(Message):
    TYPE: ClassVar[str] = "job_assignment"
    job_id: str = attrs.field(validator=checks.identifier)
    job_key: str | None = attrs.field(default=None, validator=checks.job_key)


@attrs.frozen
class JobCancel(Message):
    TYPE: ClassVar[str] = "job_cancel"
    job_id: str = attrs.field(validator=checks.identifier)
    job_key: str | None = attrs.field(default=None, validator=checks.job_key)


@attrs.frozen
class JobStop(Message):
    """Client → worker: stop the running job early and keep its outputs (SLEAP's Stop button)."""

    TYPE: ClassVar[str] = "job_stop"
    job_id: str = attrs.field(validator=checks.identifier)
    job_key: str | None = attrs.field(default=None, validator=checks.job_key)


@attrs.frozen
class JobSync(Message):
    """Client → worker: replay this job's events numbered above `after_seq` (up to `upto_seq` when given).

    With `upto_seq` the worker ends its answer with `job_head`: the client learns how far the job's events go
    without the worker resending an event that may still be on its way (`after_seq == upto_seq`: a probe).
    """

    TYPE: ClassVar[str] = "job_sync"
    job_id: str = attrs.field(validator=checks.identifier)
    after_seq: int = attrs.field(default=0, validator=checks.non_negative)
    job_key: str | None = attrs.field(default=None, validator=checks.job_key)
    upto_seq: int | None = attrs.field(default=None, validator=attrs.validators.optional(checks.non_negative))


@attrs.frozen
class RtcOffer(Message):
    """Client → worker: an SDP offer for the data channel of `job_id`."""

    TYPE: ClassVar[str] = "rtc_offer"
    job_id: str = attrs.field(validator=checks.identifier)
    sdp: str = attrs.field(validator=checks.bounded_text)
    options: dict[str, Any] = attrs.field(factory=dict)
    job_key: str | None = attrs.field(default=None, validator=checks.job_key)
