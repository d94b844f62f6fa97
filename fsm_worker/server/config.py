"""Configuration of the signaling server."""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Iterable
from typing import Any

import attrs


def _tokens(value: object) -> list[str]:
    if isinstance(value, str):
        raise TypeError("tokens must be a list of strings, not one string")
    tokens: list[str] = list(value)  # type: ignore[call-overload]
    if not tokens or not all(isinstance(t, str) and t for t in tokens):
        raise ValueError("tokens must be a non-empty list of non-empty strings")
    return tokens


_ORIGIN_RE = re.compile(r"https?://[^/\s?#]+")


def _origins(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("cors_origins must be a list of origins, not one string")
    origins = tuple(value)
    for origin in origins:
        if origin != "*" and not (isinstance(origin, str) and _ORIGIN_RE.fullmatch(origin)):
            raise ValueError(f"cors_origins: {origin!r} is not '*' or an origin like https://host:port")
    return origins


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive")


@attrs.frozen
class ServerConfig:
    """Everything the server needs. Each token opens its own room; tokens are never logged or stored."""

    tokens: list[str] = attrs.field(
        converter=_tokens,
        metadata={"name": "token", "help": "room token; each opens its own room", "secret": True},
    )
    host: str = attrs.field(default="127.0.0.1", metadata={"help": "interface to listen on"})
    port: int = attrs.field(default=8765, metadata={"help": "port to listen on (0 picks a free one)"})
    redis_url: str | None = attrs.field(
        default=None,
        metadata={
            "name": "redis",
            "help": "redis://HOST:PORT/DB: share the rooms with other server processes",
        },
    )
    max_event_bytes: int = attrs.field(
        default=128 * 1024, validator=_positive, metadata={"help": "largest Socket.IO event a peer may send"}
    )
    resume_grace_seconds: float = attrs.field(
        default=30.0,
        validator=attrs.validators.ge(0),
        metadata={
            "name": "resume_grace",
            "aliases": ("--grace",),
            "help": "seconds a dropped peer's id stays reserved for its resume secret",
        },
    )
    node_ttl_seconds: float = attrs.field(
        default=10.0,
        validator=_positive,
        metadata={"name": "node_ttl", "help": "seconds before a silent server node is declared dead (redis)"},
    )
    #: Engine.IO heartbeats (python-socketio's defaults): every connection is pinged this often, so shorter
    #: intervals notice a silently dead peer sooner but cost the server CPU in proportion to its peers.
    ping_interval_seconds: float = attrs.field(
        default=25.0,
        validator=_positive,
        metadata={"name": "ping_interval", "help": "seconds between Engine.IO heartbeats of a connection"},
    )
    ping_timeout_seconds: float = attrs.field(
        default=20.0,
        validator=_positive,
        metadata={
            "name": "ping_timeout",
            "help": "seconds without a heartbeat answer before a peer is dropped",
        },
    )
    redis_prefix: str = attrs.field(
        default="fsm_worker", metadata={"help": "prefix of this server's redis keys"}
    )
    node_id: str = attrs.field(
        factory=_default_node_id,
        metadata={"help": "this server node's id (redis)", "default_text": "<hostname>-<pid>-<random>"},
    )

    # -- limits (docs/security.md): each refusal names the field it hit ---------------------------------------
    rate_limit_events_per_second: float = attrs.field(
        default=200.0,
        validator=_positive,
        metadata={
            "help": "events per second one connection may send (token bucket refill rate); more get `RATE_LIMITED`"
        },
    )
    rate_limit_burst: int = attrs.field(
        default=400,
        validator=_positive,
        metadata={"help": "events one connection may send in a burst above the rate (token bucket size)"},
    )
    rate_limit_hold_seconds: float = attrs.field(
        default=0.01,
        validator=_positive,
        metadata={
            "help": "after a `RATE_LIMITED` refusal, the connection is not read again until this much of its rate "
            "is back (one refusal per batch, not per event)"
        },
    )
    max_send_buffer_bytes: int = attrs.field(
        default=16 * 1024 * 1024,
        validator=_positive,
        metadata={
            "help": "unsent bytes a connection may have queued on the server; a peer that does not read is dropped"
        },
    )
    max_send_buffer_messages: int = attrs.field(
        default=4096,
        validator=_positive,
        metadata={
            "help": "unsent messages a connection may have queued on the server (the count behind the byte limit)"
        },
    )
    max_metadata_bytes: int = attrs.field(
        default=8 * 1024,
        validator=_positive,
        metadata={"help": "encoded size of one peer's metadata (at connect and after every update)"},
    )
    discover_default_limit: int = attrs.field(
        default=100,
        validator=_positive,
        metadata={"help": "peers in one discovery answer when the request gives no `limit`"},
    )
    discover_max_limit: int = attrs.field(
        default=500,
        validator=_positive,
        metadata={"help": "the largest `limit` a discovery request may ask for"},
    )
    auth_timeout_seconds: float = attrs.field(
        default=5.0,
        validator=_positive,
        metadata={"help": "seconds a new connection has to present a valid token and claim a peer id"},
    )
    max_connections: int = attrs.field(
        default=1024,
        validator=_positive,
        metadata={"help": "Engine.IO connections this node accepts in total (authenticated or not)"},
    )
    max_connections_per_address: int = attrs.field(
        default=256,
        validator=_positive,
        metadata={"help": "Engine.IO connections this node accepts from one IP address"},
    )
    notice_log_interval_seconds: float = attrs.field(
        default=10.0,
        validator=_positive,
        metadata={
            "help": "per connection, refusals after the first of each kind are logged as one summary per interval"
        },
    )
    max_holds_per_client: int = attrs.field(
        default=16,
        validator=attrs.validators.ge(0),
        metadata={
            "help": "jobs the room's workers may reserve, queue or run at once for one client (the `hold` op; "
            "counted across nodes with `--redis`); more get `job_response` `room_cap`. 0: no cap"
        },
    )
    max_holds_per_worker: int = attrs.field(
        default=256,
        validator=_positive,
        metadata={"help": "holds one worker may claim at once (bounds the server's memory per worker)"},
    )
    resume_key: str | None = attrs.field(
        default=None,
        repr=False,
        metadata={
            "help": "the key resume secrets are signed with (HMAC-SHA256); all nodes sharing Redis need the same key",
            "secret": True,
        },
    )
    resume_key_file: str | None = attrs.field(
        default=None,
        metadata={
            "help": "where the key is read from when `resume_key` is unset; generated there (mode 0600) if missing. `None`: `$XDG_STATE_HOME/fsm-worker/signaling-resume.key`"
        },
    )
    redis_timeout_seconds: float = attrs.field(
        default=2.0,
        validator=_positive,
        metadata={
            "help": "seconds one Redis command may take before it counts as failed (and is retried or refused)"
        },
    )
    cors_origins: tuple[str, ...] = attrs.field(
        default=(),
        converter=_origins,
        metadata={
            "name": "cors_origin",
            "help": "a browser origin (scheme://host[:port]) allowed to connect besides the server's own; "
            "repeatable; `*` allows any; none: same-origin only (`localhost` is not `127.0.0.1`)",
        },
    )
    metrics_enabled: bool = attrs.field(
        default=True,
        metadata={"help": "serve Prometheus `GET /metrics` (aggregate counts only; docs/metrics.md)"},
    )
    dashboard_enabled: bool = attrs.field(
        default=True, metadata={"help": "serve the dashboard at `/` (behind a room token)"}
    )
    dashboard_refresh_seconds: float = attrs.field(
        default=1.0,
        validator=_positive,
        metadata={"help": "how often an open dashboard reads the room's peers"},
    )
    dashboard_max_sessions: int = attrs.field(
        default=256, validator=_positive, metadata={"help": "most dashboard logins held at once"}
    )
    dashboard_session_seconds: float = attrs.field(
        default=12 * 3600.0, validator=_positive, metadata={"help": "seconds a dashboard login lasts"}
    )
