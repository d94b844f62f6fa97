"""The project's error vocabulary: one name per layer, one enum of codes per layer.

| layer | exception | codes | documented in |
| --- | --- | --- | --- |
| peer-message payloads (`app_error`, `job_failed`) | `MessageError` | `AppErrorCode` | docs/protocol.md |
| the signaling server's refusals and `ok: false` acks | `SignalingRefusal` | `SignalingCode` | docs/signaling.md |
| data-channel frames (`error` frames) | `FrameError` | `FrameCode` | docs/transfer.md |

Tests check that each document's table lists exactly its enum's codes. Codes are `StrEnum`s: on the wire they
are the plain strings shown here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class AppErrorCode(StrEnum):
    """Codes of `app_error` messages and of `job_failed` errors (docs/protocol.md, "Error codes")."""

    # app_error: a message the worker refused; nothing changed
    INVALID_MESSAGE = "INVALID_MESSAGE"  # the payload breaks the contract (the message names the field)
    INVALID_ASSIGNMENT = "INVALID_ASSIGNMENT"  # no reservation of this job is held for the sender
    NOT_ASSIGNED = "NOT_ASSIGNED"  # rtc_offer from a peer that is not the job's client, or no such job
    UNKNOWN_JOB = "UNKNOWN_JOB"  # job_sync for a job the worker does not hold for the sender
    RTC_SETUP_FAILED = "RTC_SETUP_FAILED"  # the worker could not answer the offer or open the data channel
    CHANNEL_LOST = "CHANNEL_LOST"  # the worker restarted: the job's data channel went with the old process
    # job_failed: why a job ended without results
    INPUT_TIMEOUT = "INPUT_TIMEOUT"
    FIRST_INPUT_TIMEOUT = "FIRST_INPUT_TIMEOUT"  # no input bytes within first_input_timeout of the assignment
    WORKER_SHUTDOWN = "WORKER_SHUTDOWN"
    QUEUE_LEASE_EXPIRED = "QUEUE_LEASE_EXPIRED"  # queued, no job_sync for queue_lease (issue 12)
    EXIT_NONZERO = "EXIT_NONZERO"
    KILLED = "KILLED"
    TIMEOUT = "TIMEOUT"
    HANDLER_ERROR = "HANDLER_ERROR"
    INPUT_INVALID = "INPUT_INVALID"
    LOST = "LOST"  # a detached job not found again after a worker restart (docs/durability.md)


class MessageError(ValueError):
    """A peer-message payload that does not follow the wire contract; `field` names the offending part."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class SignalingCode(StrEnum):
    """Codes of the signaling server's `ok: false` acks and connection refusals (docs/signaling.md)."""

    INVALID_MESSAGE = "INVALID_MESSAGE"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    PEER_NOT_FOUND = "PEER_NOT_FOUND"
    INVALID_FILTER = "INVALID_FILTER"
    INVALID_METADATA = "INVALID_METADATA"
    UNKNOWN_EVENT = "UNKNOWN_EVENT"
    NOT_REGISTERED = "NOT_REGISTERED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    # connection refusals
    INVALID_AUTH = "INVALID_AUTH"
    AUTH_FAILED = "AUTH_FAILED"
    PEER_ID_TAKEN = "PEER_ID_TAKEN"
    PEER_ID_RESERVED = "PEER_ID_RESERVED"
    SERVER_UNAVAILABLE = "SERVER_UNAVAILABLE"
    RATE_LIMITED = "RATE_LIMITED"
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"
    INVALID_FRAME = "INVALID_FRAME"
    # the room-wide hold cap (issue 10 item 8, `hold`)
    HOLD_LIMIT = "HOLD_LIMIT"
    NOT_A_WORKER = "NOT_A_WORKER"
    # client side only (the Python link reports them; the server never sends them)
    NOT_CONNECTED = "NOT_CONNECTED"
    TIMEOUT = "TIMEOUT"
    QUEUE_FULL = "QUEUE_FULL"


class SignalingRefusal(Exception):
    """Untrusted input the signaling server refused; `code` and `message` go back to the peer."""

    def __init__(self, code: SignalingCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def ack(self) -> dict[str, Any]:
        """The `ok: false` ack for this refusal."""
        return {"ok": False, "code": str(self.code), "message": self.message}


class FrameCode(StrEnum):
    """Codes of data-channel `error` frames (docs/transfer.md), and three local ones."""

    BAD_FRAME = "BAD_FRAME"  # unparsable JSON, unknown type, wrong field type
    UNEXPECTED = "UNEXPECTED"  # valid frame at the wrong time (chunk without a file, ...)
    BAD_NAME = "BAD_NAME"  # not a plain relative file name
    LINK_REFUSED = "LINK_REFUSED"  # target (or the inputs dir) is a symlink or not a regular file
    TOO_LARGE = "TOO_LARGE"  # job upload limit (or the client's download size cap) exceeded
    TOO_MANY_FILES = "TOO_MANY_FILES"  # per-job input file count (or the client's download count cap)
    SIZE_MISMATCH = "SIZE_MISMATCH"  # more or fewer bytes than the header announced
    HASH_MISMATCH = "HASH_MISMATCH"  # sha256 of the received bytes differs from the header
    BUSY = "BUSY"  # an upload or download is still in progress
    COMMITTED = "COMMITTED"  # inputs already committed; no more uploads
    COMMIT_FAILED = "COMMIT_FAILED"  # the host refused or failed the commit
    NOT_READY = "NOT_READY"  # results are not available (yet)
    IO_ERROR = "IO_ERROR"  # the worker could not read/write a file
    INTERNAL = "INTERNAL"  # unexpected worker bug; the endpoint keeps running
    EXISTS = "EXISTS"  # local: the download destination already holds that path
    CHANNEL_CLOSED = "CHANNEL_CLOSED"  # local: the data channel closed mid-operation
    TIMEOUT = "TIMEOUT"  # local: no reply within the timeout


class FrameError(ValueError):
    """A data-channel frame that could not be parsed or validated; the message names the field."""

    def __init__(self, message: str, code: FrameCode = FrameCode.BAD_FRAME, name: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.name = name
