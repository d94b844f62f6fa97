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
