"""JSON Schemas of the Socket.IO signaling events, written from the rules in `fsm_worker.protocol.signaling`
(its limits are imported, so a changed limit changes the contract) and `fsm_worker.server.filters`.
"""

from __future__ import annotations

from typing import Any

from fsm_worker.protocol.errors import SignalingCode
from fsm_worker.protocol.signaling import MAX_PEER_ID_CHARS, MAX_TAGS, ROLES

Schema = dict[str, Any]

PEER_ID: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_PEER_ID_CHARS,
    "pattern": "^[A-Za-z0-9._:@+\\-]+$",
    "description": "1-128 characters of letters, digits and ._:@+-",
}
ROLE: Schema = {"type": "string", "enum": list(ROLES)}


def _object(
    properties: Schema, required: list[str], *, closed: bool = False, description: str = ""
) -> Schema:
    schema: Schema = {"type": "object"}
    if description:
        schema["description"] = description
    schema["properties"] = properties
    if required:
        schema["required"] = required
    schema["additionalProperties"] = not closed
    return schema


WORKER_PROPERTIES = _object(
    {
        "status": {"type": "string", "enum": ["available", "reserved", "busy", "draining"]},
        "slots": {"type": "integer", "minimum": 1, "description": "one per GPU, or --slots on a CPU host"},
        "free_slots": {"type": "integer", "minimum": 0},
        "queue_length": {"type": "integer", "minimum": 0},
        "queue_free": {"type": "integer", "minimum": 0, "description": "places left in the queue"},
        "gpu_memory_mb": {
            "type": "integer",
            "minimum": 0,
            "description": "the largest memory of one free GPU slot (of any GPU slot when none is free)",
        },
        "gpu_model": {"type": "string"},
        "cuda_version": {"type": "string"},
        "supported_job_types": {"type": "array", "items": {"type": "string"}},
        "max_concurrent_jobs": {"type": "integer", "minimum": 1},
        "hostname": {"type": "string", "description": "only when the worker opts in (publish_hostname)"},
    },
    [],
    description="What a worker publishes in metadata.properties (discovery filters match on these).",
)

JOB_SUMMARY = _object(
    {
        "run": {
            "type": "integer",
            "minimum": 1,
            "description": "the worker's count of the jobs it started (no job id: issue 10)",
        },
        "job_type": {"type": "string"},
        "status": {"type": "string", "description": "starting | running (the job's job_status)"},
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "message": {"type": "string"},
        "elapsed_seconds": {"type": "number", "minimum": 0},
        "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
    },
    ["run", "job_type", "status", "progress", "elapsed_seconds"],
    description="metadata.job of a worker: its running job (null when idle), for dashboards.",
)

LAST_JOB = _object(
    {
        "run": {
            "type": "integer",
            "minimum": 1,
            "description": "the worker's count of the jobs it started (no job id: issue 10)",
        },
        "job_type": {"type": "string"},
        "outcome": {"type": "string", "enum": ["completed", "stopped", "failed", "cancelled", "expired"]},
        "duration_seconds": {"type": "number", "minimum": 0},
    },
    ["run", "job_type", "outcome", "duration_seconds"],
    description="metadata.last_job of a worker: how its last job that started running ended.",
)

METADATA = _object(
    {
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_TAGS},
        "properties": {"type": "object", "description": "a worker's: WorkerMetadata"},
    },
    [],
    description="A peer's metadata: any JSON object of at most max_event_bytes encoded, 32 levels deep.",
)

WORKER_METADATA = _object(
    {
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_TAGS},
        "properties": {"$ref": "#/components/schemas/WorkerProperties"},
        "job": {"anyOf": [{"$ref": "#/components/schemas/JobSummary"}, {"type": "null"}]},
        "last_job": {"$ref": "#/components/schemas/LastJob"},
        "slots": {
            "type": "array",
            "items": _object(
                {
                    "index": {"type": "integer", "minimum": 0},
                    "gpus": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "memory_mb": {"type": "integer", "minimum": 0},
                    "state": {"type": "string", "enum": ["available", "held", "reserved", "busy"]},
                    "model": {
                        "type": "string",
                        "description": "the GPU's model, when known (NVML or --gpus)",
                    },
                },
                ["index", "gpus", "memory_mb", "state"],
            ),
            "description": "per slot; no job ids (issue 10: other clients' jobs are not published)",
        },
        "queue": _object(
            {"length": {"type": "integer", "minimum": 0}, "size": {"type": "integer", "minimum": 0}},
            ["length", "size"],
        ),
        "running": {"type": "integer", "minimum": 0, "description": "jobs in a busy slot now"},
        "job_schemas": {
            "type": "object",
            "additionalProperties": {"type": "object"},
            "description": "per offered job type: its config fields and accepted inputs (docs/job-types.md)",
        },
    },
    [],
    description="The metadata a fsm_worker worker publishes (what discovery and the dashboard show).",
)

AUTH = _object(
    {
        "token": {"type": "string", "minLength": 1, "description": "the room token"},
        "peer_id": PEER_ID,
        "role": ROLE,
        "metadata": {"anyOf": [{"$ref": "#/components/schemas/Metadata"}, {"type": "null"}]},
        "resume_secret": {"type": "string", "pattern": "^[A-Za-z0-9_\\-]{32,128}$"},
    },
    ["token", "peer_id", "role"],
    closed=True,
    description="The Socket.IO connect auth; unknown keys are refused with INVALID_AUTH.",
)

CONNECT_ERROR = _object(
    {
        "message": {"type": "string"},
        "data": _object({"code": {"type": "string"}}, ["code"]),
    },
    ["message"],
    description="A refused connect (Socket.IO connect_error): data.code is one of the refusal codes.",
)

WELCOME = _object(
    {
        "peer_id": PEER_ID,
        "resume_secret": {"type": "string", "pattern": "^[A-Za-z0-9_\\-]{32,128}$"},
        "holds": _object(
            {"max_per_client": {"type": "integer", "minimum": 1}},
            ["max_per_client"],
            description="To workers only, when the server counts holds (`hold`): claim them.",
        ),
    },
    ["peer_id", "resume_secret"],
    description="Sent by the server right after a connect is accepted.",
)

SESSION_REPLACED = _object({"reason": {"type": "string"}}, ["reason"])

PEER_MESSAGE_SEND = _object(
    {"to_peer_id": PEER_ID, "payload": {"$ref": "#/components/schemas/AppMessage"}},
    ["to_peer_id", "payload"],
    description="peer_message as a peer emits it; any sender field is ignored.",
)

PEER_MESSAGE_DELIVER = _object(
    {"from_peer_id": PEER_ID, "to_peer_id": PEER_ID, "payload": {"$ref": "#/components/schemas/AppMessage"}},
    ["from_peer_id", "to_peer_id", "payload"],
    description="peer_message as the target receives it; from_peer_id is bound by the server.",
)

OPERATORS: Schema = _object(
    {"$gte": {"type": "number"}, "$lte": {"type": "number"}, "$eq": {}}, [], closed=True
)
DISCOVER = _object(
    {
        "filters": _object(
            {
                "role": ROLE,
                "tags": {"type": "array", "items": {"type": "string"}},
                "properties": {"type": "object", "additionalProperties": {"anyOf": [OPERATORS, {}]}},
            },
            [],
        )
    },
    [],
)

UPDATE_METADATA = _object(
    {"metadata": {"type": "object", "description": "properties merge key by key; null deletes"}},
    ["metadata"],
)

JOB_REF: Schema = {"type": "string", "pattern": "^[0-9a-f]{16,64}$", "description": "opaque per-job hash"}
HOLD = {
    "description": "Only a worker: claim (held true) or release a hold for a client, or replace all its holds "
    "(sync). The worker is the connection's peer id.",
    "oneOf": [
        _object({"client": PEER_ID, "job_ref": JOB_REF, "held": {"type": "boolean"}}, ["client", "job_ref"],
                closed=True),
        _object(
            {"sync": {"type": "array", "items": _object({"client": PEER_ID, "job_ref": JOB_REF},
                                                        ["client", "job_ref"], closed=True)}},
            ["sync"],
            closed=True,
        ),
    ],
}  # fmt: skip
HOLD_ACK = _object(
    {
        "ok": {"const": True},
        "held": {"type": "integer", "minimum": 0},
        "holds": {"type": "integer", "minimum": 0},
    },
    ["ok"],
    description="held: the client's holds counted now; holds: the holds a sync stored.",
)

OK_ACK = _object({"ok": {"const": True}}, ["ok"])
ERROR_ACK = _object(
    {
        "ok": {"const": False},
        "code": {"type": "string", "enum": [str(code) for code in SignalingCode]},
        "message": {"type": "string"},
    },
    ["ok", "code", "message"],
    description="Any event's refusal.",
)
PEER_VIEW = _object(
    {"peer_id": PEER_ID, "role": ROLE, "metadata": {"$ref": "#/components/schemas/Metadata"}},
    ["peer_id", "role", "metadata"],
)
DISCOVER_ACK = _object(
    {"ok": {"const": True}, "peers": {"type": "array", "items": {"$ref": "#/components/schemas/PeerView"}}},
    ["ok", "peers"],
)
UPDATE_METADATA_ACK = _object(
    {"ok": {"const": True}, "metadata": {"$ref": "#/components/schemas/Metadata"}}, ["ok", "metadata"]
)


def _ack(ok: str) -> Schema:
    return {"oneOf": [{"$ref": f"#/components/schemas/{ok}"}, {"$ref": "#/components/schemas/ErrorAck"}]}


SCHEMAS: dict[str, Schema] = {
    "Auth": AUTH,
    "ConnectError": CONNECT_ERROR,
    "Welcome": WELCOME,
    "SessionReplaced": SESSION_REPLACED,
    "PeerMessageSend": PEER_MESSAGE_SEND,
    "PeerMessageDeliver": PEER_MESSAGE_DELIVER,
    "DiscoverPeers": DISCOVER,
    "UpdateMetadata": UPDATE_METADATA,
    "Metadata": METADATA,
    "WorkerMetadata": WORKER_METADATA,
    "WorkerProperties": WORKER_PROPERTIES,
    "JobSummary": JOB_SUMMARY,
    "LastJob": LAST_JOB,
    "PeerView": PEER_VIEW,
    "OkAck": OK_ACK,
    "ErrorAck": ERROR_ACK,
    "DiscoverAck": DISCOVER_ACK,
    "UpdateMetadataAck": UPDATE_METADATA_ACK,
    "PeerMessageAck": _ack("OkAck"),
    "DiscoverPeersAck": _ack("DiscoverAck"),
    "UpdateMetadataResult": _ack("UpdateMetadataAck"),
    "Hold": HOLD,
    "HoldAck": HOLD_ACK,
    "HoldResult": _ack("HoldAck"),
}

#: Socket.IO events a peer emits: (event, request schema, ack schema, summary).
PEER_EVENTS = (
    (
        "peer_message",
        "PeerMessageSend",
        "PeerMessageAck",
        "Send an application message to a peer of the room.",
    ),
    ("discover_peers", "DiscoverPeers", "DiscoverPeersAck", "List the room's connected peers that match."),
    ("update_metadata", "UpdateMetadata", "UpdateMetadataResult", "Change this peer's metadata."),
    (
        "hold",
        "Hold",
        "HoldResult",
        "A worker claims or releases the room hold of a job (HOLD_LIMIT: over a cap).",
    ),
)
#: Socket.IO events the server emits: (event, schema, summary).
SERVER_EVENTS = (
    ("peer_message", "PeerMessageDeliver", "An application message from a peer of the room."),
    ("welcome", "Welcome", "The connect was accepted: the peer id and its resume secret."),
    (
        "session_replaced",
        "SessionReplaced",
        "Someone resumed this peer id with its secret; do not reconnect.",
    ),
)
