"""What flows into the client's job core (events) and out of it (instructions for the shell).

The shell turns IO into events, feeds them to `ClientJobCore.handle(event, now)` in arrival order and carries
out the instructions it gets back, in order. Deadlines are data: the shell asks `next_deadline()` after every
step and feeds `TimerFired` when that time comes.
"""

from __future__ import annotations

import enum

import attrs

from fsm_worker.protocol.client.errors import JobClientError
from fsm_worker.protocol.messages import JobEvent, JobStatus, Message


@attrs.frozen
class ClientTimeouts:
    """Every wait of the client, in seconds."""

    connect: float = attrs.field(
        default=10.0, metadata={"name": "connect_timeout", "help": "seconds to reach the signaling server"}
    )
    response: float = attrs.field(
        default=10.0,
        metadata={
            "name": "response_timeout",
            "help": "seconds to wait for the job_responses of one request (and the end of a bid window)",
        },
    )
    rtc_setup: float = attrs.field(
        default=20.0, metadata={"name": "rtc_setup_timeout", "help": "seconds to open the data channel"}
    )
    transfer_reply: float = attrs.field(
        default=60.0,
        metadata={
            "name": "transfer_reply_timeout",
            "help": "seconds to wait for a reply on the data channel",
        },
    )
    cancel: float = attrs.field(
        default=30.0,
        metadata={"name": "cancel_timeout", "help": "seconds to wait for a cancel to be confirmed"},
    )
    liveness: float = attrs.field(
        default=5.0,
        metadata={
            "name": "liveness_timeout",
            "help": "with no job event for this long, ask the worker (job_sync) whether it is still there",
        },
    )
    head: float = attrs.field(
        default=10.0,
        metadata={
            "name": "head_timeout",
            "help": "seconds to wait for the job_head that answers a bounded job_sync; without one the client "
            "asks for a full replay (a worker older than job_head never sends one)",
        },
    )
    worker_gone: float = attrs.field(
        default=15.0,
        metadata={
            "name": "worker_gone_timeout",
            "help": "seconds a worker may be unreachable (reconnecting) before the job is declared lost",
        },
    )
    queue_keepalive: float = attrs.field(
        default=10.0,
        metadata={
            "help": "while the job waits in a worker's queue, send job_sync this often to keep its queue lease "
            "(the worker's queue_lease, 60 s by default) alive"
        },
    )
    channel_retries: int = attrs.field(
        default=3, metadata={"help": "new data channels to try when one drops mid-transfer"}
    )


class ClientJobState(enum.Enum):
    """Where one job is, as its client sees it."""

    NEW = "new"  # created; neither bidding nor attached yet
    BIDDING = "bidding"  # job_request sent to the candidates; waiting for their job_response
    ASSIGNED = "assigned"  # a worker holds the job; its events are followed in seq order
    FINISHED = "finished"  # the terminal event was delivered (results may still be downloaded)
    FAILED = "failed"  # the job is lost for this client (every bid rejected, worker gone or forgot it)
    ABANDONED = "abandoned"  # the client gave the job up (a failed submission)


class Outcome(enum.Enum):
    """How a job ended, as a typed value."""

    PENDING = "pending"
    COMPLETED = "completed"
    STOPPED_EARLY = "stopped_early"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"
    ABANDONED = "abandoned"


# --- events (into the core) ----------------------------------------------------------------------------------


@attrs.frozen
class BiddingOpened:
    """Ask `workers` for the job; the first acceptance wins, or with `bid_window` > 0 the lowest estimate."""

    workers: tuple[str, ...]
    bid_window: float = 0.0


@attrs.frozen
class Attached:
    """Follow a job `worker` already holds (submitted in an earlier session): replay it from the start."""

    worker: str


@attrs.frozen
class MessageReceived:
    """A parsed application message about this job; `sender` is the identity the server bound to it."""

    sender: str
    message: Message


@attrs.frozen
class SendReported:
    """What the signaling server did with one sent message: `refused` (with its `code`) or routed/queued."""

    to: str
    message: Message
    refused: bool
    code: str | None = None


@attrs.frozen
class OfferReady:
    """The shell made an SDP offer for the data channel: send it to the worker."""

    sdp: str
    options: dict[str, object] = attrs.field(factory=dict)


@attrs.frozen
class Reconnected:
    """The signaling link is back: ask the worker for the events that may have been missed."""


@attrs.frozen
class CancelRequested:
    """The user cancels the job."""


@attrs.frozen
class StopRequested:
    """The user stops the job early (soft stop: the worker keeps the outputs)."""


@attrs.frozen
class Abandoned:
    """The client gives the job up (its submission failed): release whatever worker holds it."""


@attrs.frozen
class TimerFired:
    """`next_deadline()` has passed."""


Event = (
    BiddingOpened
    | Attached
    | MessageReceived
    | SendReported
    | OfferReady
    | Reconnected
    | CancelRequested
    | StopRequested
    | Abandoned
    | TimerFired
)


# --- instructions (out of the core) ----------------------------------------------------------------------------


@attrs.frozen
class Send:
    """Send `message` to peer `to` (the shell keeps the order of sends to one peer)."""

    to: str
    message: Message


@attrs.frozen
class Deliver:
    """Hand one job event to the user: in `seq` order, each exactly once."""

    event: JobEvent


@attrs.frozen
class WorkerChosen:
    """Bidding is over: `worker` holds the job (it was sent `job_assignment`); `queued`: in its queue, no slot
    yet (`queue_position`, `estimated_start_seconds` as the worker offered them)."""

    worker: str
    queued: bool = False
    queue_position: int | None = None
    estimated_start_seconds: float | None = None


@attrs.frozen
class QueueUpdate:
    """The worker reports the queued job's place (`job_status` "queued" without a `seq`: not part of the job's
    numbered events, so it may repeat): hand it to the user next to the events."""

    status: JobStatus


@attrs.frozen
class ControlReply:
    """A reply from the job's worker to a shell step (`rtc_answer`, `app_error`, `reservation_expired`)."""

    message: Message


@attrs.frozen
class ChannelLost:
    """The worker restarted (`app_error` `CHANNEL_LOST`): drop the job's data channel; the next transfer, or
    the one in flight, goes on over a new one."""


@attrs.frozen
class Fail:
    """The job is lost for this client: raise `error` to whoever waits on it."""

    error: JobClientError


@attrs.frozen
class Refused:
    """The event does not apply in the current state; nothing changed."""

    event: object
    reason: str


Instruction = Send | Deliver | QueueUpdate | WorkerChosen | ControlReply | ChannelLost | Fail | Refused
