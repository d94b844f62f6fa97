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
    #: Browser origins (``scheme://host[:port]``) allowed to connect besides the server's own; ``*`` allows
    #: any. Empty (the default): same-origin only, as browsers see it (``localhost`` ≠ ``127.0.0.1``).
    cors_origins: tuple[str, ...] = attrs.field(default=(), converter=_origins)
    #: Serve Prometheus ``GET /metrics`` (aggregate counts only; docs/metrics.md).
    metrics_enabled: bool = True
    #: Serve the dashboard at ``/`` (behind a room token).
    dashboard_enabled: bool = True
    #: How often an open dashboard reads the room's peers (seconds).
    dashboard_refresh_seconds: float = attrs.field(default=1.0, validator=_positive)
    #: Most dashboard logins held at once (each lasts ``dashboard_session_seconds``).
    dashboard_max_sessions: int = attrs.field(default=256, validator=_positive)
    dashboard_session_seconds: float = attrs.field(default=12 * 3600.0, validator=_positive)
    node_id: str = attrs.field(factory=_default_node_id)
