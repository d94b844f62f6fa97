"""Typed application messages and their one wire format, by family.

Every payload that travels inside a peer message is one of the frozen attrs classes here: `to_worker`
(client → worker), `to_client` (worker → client), built from `values` (nested value objects), `base` (the
`Message` base) and `checks` (limits and field checks). `wire` holds the one parser (`parse_message`, bad
input → `MessageError` naming the field) and `to_wire` (exactly the JSON shape of docs/protocol.md). This
package is the import path the rest of the code uses: every public name is re-exported here.
"""

from fsm_worker.protocol.errors import MessageError
from fsm_worker.protocol.messages.base import Message, UnknownMessage
from fsm_worker.protocol.messages.checks import MAX_ID_LENGTH, MAX_METRIC_FIELDS, MAX_TEXT_LENGTH
from fsm_worker.protocol.messages.to_client import (
    JOB_EVENT_TYPES,
    AppError,
    JobCancelled,
    JobComplete,
    JobEvent,
    JobFailed,
    JobHead,
    JobResponse,
    JobStatus,
    ReservationExpired,
    RtcAnswer,
)
from fsm_worker.protocol.messages.to_worker import (
    JobAssignment,
    JobCancel,
    JobRequest,
    JobStop,
    JobSync,
    RtcOffer,
)
from fsm_worker.protocol.messages.values import InputFile, JobError, JobResult, Metrics, Requirements
from fsm_worker.protocol.messages.wire import MESSAGE_TYPES, parse_message, structure, to_wire

__all__ = [
    "JOB_EVENT_TYPES",
    "MAX_ID_LENGTH",
    "MAX_METRIC_FIELDS",
    "MAX_TEXT_LENGTH",
    "MESSAGE_TYPES",
    "AppError",
    "InputFile",
    "JobAssignment",
    "JobCancel",
    "JobCancelled",
    "JobComplete",
    "JobError",
    "JobEvent",
    "JobFailed",
    "JobHead",
    "JobRequest",
    "JobResponse",
    "JobResult",
    "JobStatus",
    "JobStop",
    "JobSync",
    "Message",
    "MessageError",
    "Metrics",
    "Requirements",
    "ReservationExpired",
    "RtcAnswer",
    "RtcOffer",
    "UnknownMessage",
    "parse_message",
    "structure",
    "to_wire",
]
