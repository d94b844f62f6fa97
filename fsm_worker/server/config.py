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
