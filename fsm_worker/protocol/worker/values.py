"""Plain values of the worker's core: what a row's guard or action sees, a retained job, the timings."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Literal

import attrs

from fsm_worker.protocol.messages import JobEvent, Message
from fsm_worker.protocol.worker.events import Event


@attrs.frozen
class Stimulus:
    """What a guard or action sees: the time, the event, and for a peer message its sender and typed message."""

    now: float
    event: Event | None = None
    sender: str | None = None
    message: Message | None = None
    job_id: str | None = None


@attrs.define
class Retained:
    """A finished job kept for its client: its events for replay and, until `expires_at`, its files."""

    client_id: str
    expires_at: float
    history: list[JobEvent]
    files_kept: bool
    #: sha256 of the job's key (`job_request.job_key_sha256`); None: the job was requested without one.
    key_sha256: str | None = None


@attrs.frozen
class CoordinatorConfig:
    """The worker protocol's timings; the defaults here are the only ones (the worker's settings use them)."""

    reservation_timeout: float = attrs.field(
        default=30.0, metadata={"help": "seconds a reservation waits for its job_assign"}
    )
    input_timeout: float = attrs.field(
        default=1800.0, metadata={"help": "seconds an assigned job waits for its inputs"}
    )
    retention: float = attrs.field(
        default=3600.0, metadata={"help": "seconds a finished job's events and results stay fetchable"}
    )
    first_input_timeout: float = attrs.field(
        default=60.0, metadata={"help": "seconds an assigned job waits for its first input bytes"}
    )
    stimulus_log_size: int = attrs.field(
        default=256, metadata={"help": "events kept in the core's stimulus log (for debugging)"}
    )
    queue_size: int = attrs.field(
        default=16,
        metadata={"help": "jobs that may wait for a slot (requests with queue: true); 0: no queue"},
    )
    queue_lease: float = attrs.field(
        default=60.0,
        metadata={"help": "seconds a queued job stays queued without its client's job_sync"},
    )
    max_jobs_per_client: int = attrs.field(
        default=4,
        metadata={"help": "most jobs one client may have waiting in the queue at once"},
    )
    require_job_key: bool = attrs.field(
        default=True,
        metadata={
            "help": "refuse a job_request without job_key_sha256 (`incompatible`, naming this setting), so every "
            "job is bound to a key its client holds; false: a keyless job is bound to its client's peer id alone, "
            "which another peer may take after its resume grace"
        },
    )
    queue_bypass_limit: int = attrs.field(
        default=3,
        validator=attrs.validators.ge(0),
        metadata={
            "help": "times a queued job that does not fit yet may be passed by a later job that fits now; "
            "then the free slots are held for it (0: strict FIFO)"
        },
    )
    # The drain's settings: not in the journal's fingerprint (`replay_fingerprint`), see docs/durability.md.
    shutdown_policy: Literal["finish", "cancel"] = attrs.field(
        default="finish",
        validator=attrs.validators.in_(("finish", "cancel")),
        metadata={"help": "on SIGINT/SIGTERM: let the running job finish, or cancel it", "replay": False},
    )
    shutdown_timeout: float = attrs.field(
        default=300.0,
        metadata={
            "help": "seconds a shutdown waits for the running job before stopping it",
            "replay": False,
        },
    )
    kill_grace: float = attrs.field(
        default=5.0,
        metadata={"help": "seconds a stopped job gets between SIGTERM and SIGKILL", "replay": False},
    )


#: Seconds past `kill_grace` a drain waits for the jobs it stopped before it gives up on them (`Drained`).
DRAIN_MARGIN = 10.0


def replay_fingerprint(config: CoordinatorConfig) -> dict[str, Any]:
    """The settings a journal's replay depends on (its fingerprint): the drain's are left out, so changing
    them never refuses a restart (a journal with events is one of a core that was not drained)."""
    return attrs.asdict(config, filter=lambda field, _: field.metadata.get("replay", True))


def presents_key(expected_sha256: str | None, s: Stimulus) -> bool:
    """A client message about a keyed job must carry the job's key (issue 10: events and files are bound to a
    credential the client holds, not to its peer id). Jobs requested without `job_key_sha256` and the core's
    own events (no message) are not checked."""
    if expected_sha256 is None or s.message is None:
        return True
    key = getattr(s.message, "job_key", None)
    return isinstance(key, str) and hmac.compare_digest(
        hashlib.sha256(key.encode()).hexdigest(), expected_sha256
    )
