"""The Socket.IO signaling server (python-socketio ``AsyncServer`` on aiohttp): its connections (auth, resume).

The events a connected peer sends are handled in `peer_events`; the aiohttp app and its start in `app`.

Peers connect with ``auth={"token", "peer_id", "role", "metadata", "resume_secret"?}``; a token is a room.
Identity is bound to the connection; messages are routed through Socket.IO rooms named after the peer id,
which is what lets ``AsyncRedisManager`` deliver across server processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

import socketio
from aiohttp import WSCloseCode, web

from fsm_worker.json_packet import JsonPacket
from fsm_worker.logfmt import log_event
from fsm_worker.protocol.errors import SignalingCode, SignalingRefusal
from fsm_worker.protocol.signaling import (
    error_ack,
    hash_secret,
    parse_auth,
    room_for_token,
)
from fsm_worker.server.config import ServerConfig
from fsm_worker.server.dashboard import Dashboard
from fsm_worker.server.guard import EIO_SID_KEY, ConnectionGuard
from fsm_worker.server.holds import HoldBook, Holds
from fsm_worker.server.metrics import ServerMetrics
from fsm_worker.server.peer_events import LocalPeer, PeerEvents, route_room
from fsm_worker.server.redis_holds import RedisHolds
from fsm_worker.server.redis_registry import RedisRegistry
from fsm_worker.server.registry import ClaimKind, ClaimRequest, MemoryRegistry, Registry
from fsm_worker.server.resume import Lineage, ResumeSigner, load_key

log = logging.getLogger("fsm_worker.server.server")


class SignalingServer:
    """Socket.IO handlers, the registry and the per-node connection table."""

    def __init__(self, config: ServerConfig, registry: Registry | None = None) -> None:
        self.config = config
        self.rooms = frozenset(room_for_token(t) for t in config.tokens)
        grace = config.resume_grace_seconds
        if registry is None:
            if config.redis_url:
                registry = RedisRegistry(
                    url=config.redis_url,
                    node_id=config.node_id,
                    grace=grace,
                    node_ttl=config.node_ttl_seconds,
                    prefix=config.redis_prefix,
                    timeout=config.redis_timeout_seconds,
                    on_evict=self._evict,
                )
            else:
                registry = MemoryRegistry(grace=grace, node_id=config.node_id)
        self.registry = registry
        self.signer = ResumeSigner(load_key(config.resume_key, config.resume_key_file))
        manager = (
            socketio.AsyncRedisManager(config.redis_url, channel=f"{config.redis_prefix}:socketio")
            if config.redis_url
            else None
        )
        self.sio = socketio.AsyncServer(
            serializer=JsonPacket,
            async_mode="aiohttp",
            client_manager=manager,
            async_handlers=False,  # events of one connection are handled in arrival order
            max_http_buffer_size=2 * config.max_event_bytes + 64 * 1024,
            ping_interval=config.ping_interval_seconds,
            ping_timeout=config.ping_timeout_seconds,
            cors_allowed_origins=list(config.cors_origins) or None,  # None: same origin only
            logger=False,
            engineio_logger=False,
        )
        self.guard = ConnectionGuard(self.sio, config)
        self.peers: dict[str, LocalPeer] = {}
        #: The room-wide hold cap (issue 10 item 8); None: off (`max_holds_per_client = 0`).
        self.holds: Holds | None = None
        if config.max_holds_per_client and isinstance(registry, RedisRegistry):
            self.holds = RedisHolds(registry, config.max_holds_per_client, config.max_holds_per_worker)
        elif config.max_holds_per_client:
            self.holds = HoldBook(config.max_holds_per_client, config.max_holds_per_worker, grace)
        self._local: dict[
            tuple[str, str], str
        ] = {}  # (room, peer id) → sid of the local connection holding it
        self._websockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self.metrics = ServerMetrics(
            lambda: [p.role for p in self.peers.values()], lambda: len(self.sio.eio.sockets)
        )
        self.sio.on("connect", self.metrics.metered_connect(self._on_connect))
        self.sio.on("disconnect", self._on_disconnect)
        self.events = PeerEvents(config, registry, self.sio, self.guard, self.holds, self.peers, self._local)
        self.events.register(self.metrics)

    def attach(self, app: web.Application) -> None:
        """Mount Socket.IO and ``/healthz`` on ``app`` and tie the registry to its lifecycle."""
        self.sio.attach(app)
        app.router.add_get("/healthz", self._healthz)
        if self.config.metrics_enabled:
            app.router.add_get("/metrics", self.metrics.handle)
        if self.config.dashboard_enabled:
            Dashboard(self).attach(app)
        app.on_startup.append(self._startup)
        app.on_shutdown.append(self._shutdown)
        app.on_response_prepare.append(self._track_websocket)

    async def _track_websocket(self, _request: web.Request, response: web.StreamResponse) -> None:
        if isinstance(response, web.WebSocketResponse):
            self._websockets.add(response)

    async def _startup(self, _app: web.Application) -> None:
        await self.registry.start()
        self.guard.start()
        log_event(
            log, logging.INFO, "server_started", node=self.config.node_id, rooms=len(self.rooms),
            registry=type(self.registry).__name__,
        )  # fmt: skip

    async def _shutdown(self, _app: web.Application) -> None:
        log_event(log, logging.INFO, "server_stopping", node=self.config.node_id, peers=len(self.peers))
        # Drop transports (close code 1001) rather than sending Socket.IO disconnects: clients treat this
        # as a lost link and reconnect, to this node after a restart or to another one.
        closing = [
            ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for ws in self._websockets
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.gather(*closing, return_exceptions=True)
                while self.sio.eio.sockets:  # let Engine.IO notice and run the disconnect handlers
                    await asyncio.sleep(0.01)
        if self.sio.eio.sockets:  # anything left (e.g. long-polling clients)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.sio.eio.disconnect()
        await self.sio.shutdown()
        await self.guard.stop()
        await self.registry.close()

    async def _healthz(self, _request: web.Request) -> web.Response:
        # unauthenticated: only whether this node can serve (no hostname, pid or peer count)
        healthy = bool(getattr(self.registry, "healthy", True))
        return web.json_response({"ok": healthy}, status=200 if healthy else 503)

    # -- connection lifecycle -------------------------------------------------------------------------------

    async def _on_connect(self, sid: str, environ: Any = None, auth: Any = None, *extra: Any) -> Any:
        if sid in self.peers:  # a connected client emitted an event named "connect"
            return error_ack(SignalingCode.INVALID_MESSAGE, "'connect' is a reserved event name")
        try:
            return await self._admit(sid, environ if isinstance(environ, dict) else {}, auth)
        except socketio.exceptions.ConnectionRefusedError:
            raise
        except Exception as exc:  # never leave a connect unanswered
            log.exception("%s", f"event=connect_failed sid={sid}")
            raise socketio.exceptions.ConnectionRefusedError(
                f"connect failed: {type(exc).__name__}", {"code": str(SignalingCode.INTERNAL_ERROR)}
            ) from None

    def _issue(self, room: str, peer_id: str) -> Callable[[Lineage], tuple[str, str]]:
        def issue(lineage: Lineage) -> tuple[str, str]:
            secret = self.signer.issue(room, peer_id, lineage)
            return secret, hash_secret(secret)

        return issue

    async def _admit(self, sid: str, environ: dict[str, Any], auth: Any) -> Any:
        try:
            req = parse_auth(auth, max_bytes=self.config.max_metadata_bytes)
            room = room_for_token(req.token)
            if room not in self.rooms:
                raise SignalingRefusal(SignalingCode.AUTH_FAILED, "invalid token")
        except SignalingRefusal as exc:
            log_event(log, logging.WARNING, "connect_refused", sid=sid, code=exc.code, reason=exc.message)
            raise socketio.exceptions.ConnectionRefusedError(exc.message, {"code": str(exc.code)}) from None
        presented = req.resume_secret
        lineage = self.signer.verify(room, req.peer_id, presented) if presented else None
        claim = ClaimRequest(
            room=room,
            peer_id=req.peer_id,
            sid=sid,
            role=req.role,
            metadata=req.metadata,
            presented_hash=hash_secret(presented) if presented else None,
            secret_hash=hash_secret(presented) if presented else "",
            presented=lineage,
            issue=self._issue(room, req.peer_id),
        )
        try:
            decision = await self.registry.claim(claim, time.time())
        except Exception as exc:
            log_event(log, logging.ERROR, "registry_error", op="claim", error=repr(exc))
            raise socketio.exceptions.ConnectionRefusedError(
                "registry unavailable", {"code": str(SignalingCode.SERVER_UNAVAILABLE)}
            ) from None
        fields = {"room": room[:12], "peer_id": req.peer_id, "role": req.role, "sid": sid}
        if decision.kind is ClaimKind.REFUSED:
            assert decision.code is not None
            log_event(log, logging.WARNING, "connect_refused", code=decision.code, **fields)
            raise socketio.exceptions.ConnectionRefusedError(decision.message, {"code": str(decision.code)})
        secret = decision.secret or presented or ""
        self.peers[sid] = LocalPeer(sid, room, req.peer_id, req.role, dict(req.metadata), secret)
        self._local[(room, req.peer_id)] = sid
        if EIO_SID_KEY in environ:
            self.guard.authenticated(environ[EIO_SID_KEY], req.peer_id)
        await self.sio.enter_room(sid, route_room(room, req.peer_id))
        if self.holds is not None and req.role == "worker":
            self.holds.worker_back(room, req.peer_id)
        if decision.replaced_sid is not None:
            await self._drop_replaced(decision.replaced_sid, fields)
        self.sio.start_background_task(self._welcome, sid)
        log_event(log, logging.INFO, "peer_connected", kind=decision.kind, **fields)
        return True

    async def _evict(self, sid: str) -> None:
        """The registry gave this sid's id to a stronger claim (while re-publishing after a Redis restart)."""
        await self._drop_replaced(sid, {"reason": "registry_reconciled"})

    async def _drop_replaced(self, old_sid: str, fields: dict[str, str]) -> None:
        log_event(log, logging.INFO, "session_replaced", old_sid=old_sid, **fields)
        self._forget(self.peers.pop(old_sid, None))
        try:
            await self.sio.emit("session_replaced", {"reason": "resumed elsewhere"}, to=old_sid)
            await self.sio.disconnect(old_sid)
        except Exception as exc:
            log_event(log, logging.WARNING, "drop_replaced_failed", old_sid=old_sid, error=repr(exc))

    async def _welcome(self, sid: str) -> None:
        peer = self.peers.get(sid)
        if peer is not None:
            welcome: dict[str, Any] = {"peer_id": peer.peer_id, "resume_secret": peer.secret}
            if self.holds is not None and peer.role == "worker":  # this server counts holds: claim them
                welcome["holds"] = {"max_per_client": self.holds.max_per_client}
            await self.sio.emit("welcome", welcome, to=sid)

    async def _on_disconnect(self, sid: str, *args: Any) -> Any:
        if self.sio.manager.is_connected(sid, "/"):  # an event named "disconnect", not a disconnect
            return error_ack(SignalingCode.INVALID_MESSAGE, "'disconnect' is a reserved event name")
        peer = self.peers.pop(sid, None)
        if peer is None:
            return None
        self._forget(peer)
        if self.holds is not None and peer.role == "worker":
            self.holds.worker_left(peer.room, peer.peer_id, time.time())
        try:
            await self.registry.release(peer.room, peer.peer_id, sid, time.time())
        except Exception as exc:
            log_event(
                log, logging.ERROR, "registry_error", op="release", peer_id=peer.peer_id, error=repr(exc)
            )
        log_event(
            log, logging.INFO, "peer_disconnected", room=peer.room_tag, peer_id=peer.peer_id, sid=sid,
            reason=args[0] if args else None,
        )  # fmt: skip
        return None

    def _forget(self, peer: LocalPeer | None) -> None:
        if peer is not None and self._local.get((peer.room, peer.peer_id)) == peer.sid:
            del self._local[(peer.room, peer.peer_id)]
