"""The events a connected peer sends the signaling server: `peer_message`, `discover_peers`, `update_metadata`
and `hold`, each answered with an ack (docs/signaling.md). The connection they come from is a `LocalPeer`."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import socketio

from fsm_worker.protocol.errors import SignalingCode, SignalingRefusal
from fsm_worker.protocol.signaling import (
    check_json,
    error_ack,
    merge_metadata,
    ok_ack,
    parse_peer_message,
    parse_update_metadata,
)
from fsm_worker.server.config import ServerConfig
from fsm_worker.server.discovery import page, parse_discovery
from fsm_worker.server.guard import ConnectionGuard
from fsm_worker.server.holds import Holds, hold_event
from fsm_worker.server.metrics import ServerMetrics
from fsm_worker.server.registry import Registry

log = logging.getLogger("fsm_worker.server.server")

Handler = Callable[["LocalPeer", tuple[Any, ...]], Awaitable[dict[str, Any]]]


def route_room(room: str, peer_id: str) -> str:
    """The Socket.IO room that reaches one peer of one token room."""
    return f"peer:{room}:{peer_id}"


@attrs.define
class LocalPeer:
    """A peer connected to this node."""

    sid: str
    room: str
    peer_id: str
    role: str
    metadata: dict[str, Any]
    secret: str

    @property
    def room_tag(self) -> str:
        """Short room id for logs."""
        return self.room[:12]


@attrs.define
class PeerEvents:
    """The handlers of a connected peer's events; `local` maps (room, peer id) to the sid on this node."""

    config: ServerConfig
    registry: Registry
    sio: socketio.AsyncServer
    guard: ConnectionGuard
    holds: Holds | None
    peers: dict[str, LocalPeer]
    local: dict[tuple[str, str], str]

    def register(self, metrics: ServerMetrics) -> None:
        """Install the handlers (metered) on the Socket.IO server, and the unknown-event answer."""
        self.sio.on("*", self.on_unknown)
        events: dict[str, Handler] = {
            "peer_message": self.peer_message,
            "discover_peers": self.discover,
            "update_metadata": self.update_metadata,
            "hold": self.hold,
        }
        for name, handler in events.items():
            self.sio.on(name, metrics.metered_event(name, self.guarded(name, handler)))

    def eio_sid(self, sid: str | None) -> str | None:
        return self.sio.manager.eio_sid_from_sid(sid, "/") if sid is not None else None

    def guarded(self, name: str, handler: Handler) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def run(sid: str, *args: Any) -> dict[str, Any]:
            peer = self.peers.get(sid)
            if peer is None:
                return error_ack(SignalingCode.NOT_REGISTERED, "this connection holds no peer id")
            try:
                return await handler(peer, args)
            except SignalingRefusal as exc:
                self.guard.notice(
                    self.eio_sid(sid), "event_refused", name=name, code=exc.code, reason=exc.message
                )
                return exc.ack()
            except Exception as exc:
                log.exception("%s", f"event=event_failed name={name} peer_id={peer.peer_id}")
                return error_ack(SignalingCode.INTERNAL_ERROR, f"{name} failed: {type(exc).__name__}")

        return run

    async def on_unknown(self, event: str, sid: str, *args: Any) -> dict[str, Any]:
        return error_ack(SignalingCode.UNKNOWN_EVENT, f"unknown event {str(event)[:64]!r}")

    async def peer_message(self, peer: LocalPeer, args: tuple[Any, ...]) -> dict[str, Any]:
        msg = parse_peer_message(args, max_bytes=self.config.max_event_bytes)
        if not await self.registry.is_connected(peer.room, msg.to_peer_id):
            raise SignalingRefusal(SignalingCode.PEER_NOT_FOUND, f"no peer {msg.to_peer_id!r} is connected")
        data = {"from_peer_id": peer.peer_id, "to_peer_id": msg.to_peer_id, "payload": msg.payload}
        await self.sio.emit("peer_message", data, to=route_room(peer.room, msg.to_peer_id))
        recipient = self.local.get((peer.room, msg.to_peer_id))  # None: on another node (no credit there)
        self.guard.routed(self.eio_sid(peer.sid), peer.peer_id, self.eio_sid(recipient), msg.to_peer_id)
        return ok_ack()

    async def discover(self, peer: LocalPeer, args: tuple[Any, ...]) -> dict[str, Any]:
        config = self.config
        request = parse_discovery(
            args, max_bytes=config.max_event_bytes, default_limit=config.discover_default_limit,
            max_limit=config.discover_max_limit,
        )  # fmt: skip
        found, cursor = page(await self.registry.peers(peer.room), request, exclude=peer.peer_id)
        return ok_ack(peers=found, next_cursor=cursor)

    async def update_metadata(self, peer: LocalPeer, args: tuple[Any, ...]) -> dict[str, Any]:
        update = parse_update_metadata(args, max_bytes=self.config.max_metadata_bytes)
        merged = merge_metadata(peer.metadata, update)
        check_json(
            merged, what="metadata", max_bytes=self.config.max_metadata_bytes, code=SignalingCode.INVALID_METADATA,
            setting="max_metadata_bytes",
        )  # fmt: skip
        if not await self.registry.set_metadata(peer.room, peer.peer_id, peer.sid, merged):
            raise SignalingRefusal(
                SignalingCode.NOT_REGISTERED, "this connection no longer holds its peer id"
            )
        peer.metadata = merged
        return ok_ack(metadata=merged)

    async def hold(self, peer: LocalPeer, args: tuple[Any, ...]) -> dict[str, Any]:
        """A worker claims, releases or syncs the holds it keeps for clients (docs/signaling.md, `hold`)."""
        return await hold_event(self.holds, peer.room, peer.peer_id, peer.role, args, time.time())
