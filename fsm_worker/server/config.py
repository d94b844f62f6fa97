"""Configuration of the signaling server."""

from __future__ import annotations

import os
import secrets
import socket
from typing import Any

import attrs


def _tokens(value: object) -> list[str]:
    if isinstance(value, str):
        raise TypeError("tokens must be a list of strings, not one string")
    tokens: list[str] = list(value)  # type: ignore[call-overload]
    if not tokens or not all(isinstance(t, str) and t for t in tokens):
        raise ValueError("tokens must be a non-empty list of non-empty strings")
    return tokens


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive")


@attrs.frozen
class ServerConfig:
    """Everything the server needs. Each token opens its own room; tokens are never logged or stored."""

    tokens: list[str] = attrs.field(converter=_tokens)
    host: str = "127.0.0.1"
    port: int = 8765
    redis_url: str | None = None
    max_event_bytes: int = attrs.field(default=128 * 1024, validator=_positive)
    resume_grace_seconds: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    node_ttl_seconds: float = attrs.field(default=10.0, validator=_positive)
    #: Engine.IO heartbeats (python-socketio's defaults): every connection is pinged this often, so shorter
    #: intervals notice a silently dead peer sooner but cost the server CPU in proportion to its peers.
    ping_interval_seconds: float = attrs.field(default=25.0, validator=_positive)
    ping_timeout_seconds: float = attrs.field(default=20.0, validator=_positive)
    redis_prefix: str = "fsm_worker"
    node_id: str = attrs.field(factory=_default_node_id)

    # -- limits (docs/security.md): each refusal names the field it hit ---------------------------------------
    #: events per second one connection may send (token bucket refill rate); more get ``RATE_LIMITED``
    rate_limit_events_per_second: float = attrs.field(default=200.0, validator=_positive)
    #: events one connection may send in a burst above the rate (token bucket size)
    rate_limit_burst: int = attrs.field(default=400, validator=_positive)
    #: unsent bytes a connection may have queued on the server; a peer that does not read is dropped
    max_send_buffer_bytes: int = attrs.field(default=16 * 1024 * 1024, validator=_positive)
    #: unsent messages a connection may have queued on the server (the count behind the byte limit)
    max_send_buffer_messages: int = attrs.field(default=4096, validator=_positive)
    #: encoded size of one peer's metadata (at connect and after every update)
    max_metadata_bytes: int = attrs.field(default=8 * 1024, validator=_positive)
    #: peers in one discovery answer when the request gives no ``limit``
    discover_default_limit: int = attrs.field(default=100, validator=_positive)
    #: the largest ``limit`` a discovery request may ask for
    discover_max_limit: int = attrs.field(default=500, validator=_positive)
    #: seconds a new connection has to present a valid token and claim a peer id
    auth_timeout_seconds: float = attrs.field(default=5.0, validator=_positive)
    #: Engine.IO connections this node accepts in total (authenticated or not)
    max_connections: int = attrs.field(default=1024, validator=_positive)
    #: Engine.IO connections this node accepts from one IP address
    max_connections_per_address: int = attrs.field(default=256, validator=_positive)
    #: per connection, refusals after the first of each kind are logged as one summary per interval
    notice_log_interval_seconds: float = attrs.field(default=10.0, validator=_positive)
    #: the key resume secrets are signed with (HMAC-SHA256); all nodes sharing Redis need the same key
    resume_key: str | None = attrs.field(default=None, repr=False)
    #: where the key is read from when ``resume_key`` is unset; generated there (mode 0600) if missing.
    #: ``None``: ``$XDG_STATE_HOME/fsm-worker/signaling-resume.key``
    resume_key_file: str | None = None
    #: seconds one Redis command may take before it counts as failed (and is retried or refused)
    redis_timeout_seconds: float = attrs.field(default=2.0, validator=_positive)
