"""A resilient Socket.IO connection to the signaling server, for workers and job clients.

- reconnects by itself with capped, jittered exponential backoff, presenting its resume secret so it gets
  its peer id back, and re-registering the metadata last set;
- :meth:`SignalingClient.send` never raises: while the link is down (or an ack is lost with the link) the
  message is queued in order and flushed after reconnection;
- incoming ``peer_message`` events are handed to the callback one at a time, in arrival order.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import inspect
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from typing import Any

import attrs
import socketio

from fsm_worker.json_packet import JsonPacket
from fsm_worker.logfmt import log_event
from fsm_worker.protocol.signaling import ErrorCode, ProtocolError, merge_metadata, parse_metadata

log = logging.getLogger("fsm_worker.shells.signaling")

PeerMessageCallback = Callable[[str, dict[str, Any]], Awaitable[None] | None]
Hook = Callable[[], Awaitable[None] | None]


class SendStatus(StrEnum):
    """What happened to a sent message."""

    DELIVERED = "delivered"  # the server routed it to the peer
    QUEUED = "queued"  # kept in order; sent after reconnection
    REFUSED = "refused"  # the server said no (see ``code``); not queued


@attrs.frozen
class SendResult:
    """Outcome of :meth:`SignalingClient.send`."""

    status: SendStatus
    code: str | None = None
    message: str | None = None

    @property
    def delivered(self) -> bool:
        """True if the server routed the message."""
        return self.status is SendStatus.DELIVERED


class SignalingError(Exception):
    """The server refused a connection or a request."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _LinkDown(Exception):
    """The link dropped before an ack arrived."""


@attrs.define(eq=False)
class _Outgoing:
    seq: int
    to_peer_id: str
    payload: dict[str, Any]
    future: asyncio.Future[SendResult]
    queued_at: float = 0.0


def metadata_delta(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The ``update_metadata`` body that turns ``old`` into ``new`` (``None`` deletes)."""
    delta: dict[str, Any] = {k: None for k in old if k not in new}
    delta.update({k: v for k, v in new.items() if k != "properties"})
    old_props, new_props = old.get("properties") or {}, new.get("properties") or {}
    if old_props or new_props:
        props = {k: None for k in old_props if k not in new_props}
        props.update(new_props)
        delta["properties"] = props
    return delta


async def _call_hook(hook: Callable[..., Awaitable[None] | None] | None, *args: Any) -> None:
    if hook is None:
        return
    try:
        result = hook(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("%s", f"event=hook_failed hook={getattr(hook, '__name__', hook)}")


class SignalingClient:
    """One peer's connection to the signaling server."""

    def __init__(
        self,
        url: str,
        token: str,
        peer_id: str,
        role: str = "client",
        metadata: Mapping[str, Any] | None = None,
        *,
        on_peer_message: PeerMessageCallback | None = None,
        on_connect: Hook | None = None,
        on_disconnect: Hook | None = None,
        resume_secret: str | None = None,
        ack_timeout: float = 5.0,
        backoff_initial: float = 0.25,
        backoff_max: float = 10.0,
        queued_peer_wait: float = 30.0,
    ) -> None:
        self.url = url
        self.peer_id = peer_id
        self.role = role
        self.resume_secret = resume_secret
        self._token = token
        self._metadata = parse_metadata(dict(metadata or {}), max_bytes=1 << 30, allow_null=False)
        self._on_peer_message = on_peer_message
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._ack_timeout = ack_timeout
        self._backoff = (backoff_initial, backoff_max)
        self._queued_peer_wait = queued_peer_wait
        self._sio: socketio.AsyncClient | None = None
        self._up = False
        self._closing = asyncio.Event()
        self._replaced = False
        self._first: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Future[Any]] = set()
        self._backlog: list[_Outgoing] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._auth_metadata: dict[str, Any] = {}
        self.reconnects = 0

    # -- public API ------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the server has accepted this peer (welcome received) and the link is up."""
        return self._up

    @property
    def metadata(self) -> dict[str, Any]:
        """Metadata as last set (what a reconnect registers)."""
        return dict(self._metadata)

    @property
    def queued(self) -> int:
        """Messages waiting for the link."""
        return len(self._backlog)

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect (retrying transport errors until ``timeout``); raise :class:`SignalingError` on refusal."""
        if self._tasks:
            raise RuntimeError("connect() may be called once")
        self._first = asyncio.get_running_loop().create_future()
        self._tasks = [
            asyncio.create_task(self._supervise(), name=f"signaling-{self.peer_id}"),
            asyncio.create_task(self._flush_loop(), name=f"signaling-flush-{self.peer_id}"),
            asyncio.create_task(self._dispatch_loop(), name=f"signaling-inbox-{self.peer_id}"),
        ]
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._first)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Disconnect and stop reconnecting; queued messages are dropped (and logged)."""
        self._closing.set()
        sio = self._sio
        if sio is not None:
            with contextlib.suppress(Exception):
                await sio.disconnect()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._backlog:
            log_event(
                log, logging.WARNING, "closed_with_queued", peer_id=self.peer_id, count=len(self._backlog)
            )
            for item in self._backlog:
                if not item.future.done():
                    item.future.set_result(SendResult(SendStatus.QUEUED))
        self._up = False

    async def send(self, to_peer_id: str, payload: Mapping[str, Any]) -> SendResult:
        """Send a peer message. Never raises; a message that cannot go now is queued in order."""
        item = _Outgoing(
            next(self._seq), to_peer_id, dict(payload), asyncio.get_running_loop().create_future()
        )
        if self._closing.is_set():
            return SendResult(SendStatus.REFUSED, ErrorCode.NOT_CONNECTED, "client is closed")
        if self._up and not any(i.to_peer_id == to_peer_id for i in self._backlog):
            try:
                ack = await self._call("peer_message", {"to_peer_id": to_peer_id, "payload": item.payload})
            except (_LinkDown, TimeoutError) as exc:
                self._enqueue(item, "link_dropped" if isinstance(exc, _LinkDown) else "ack_timeout")
                return SendResult(SendStatus.QUEUED)
            result = self._result(ack)
            if result.code != ErrorCode.RATE_LIMITED:
                return result
            self._enqueue(item, "rate_limited")  # the server's bucket is empty: sent again shortly, in order
            self._wake.set()
            return SendResult(SendStatus.QUEUED)
        self._enqueue(item, "not_connected" if not self._up else "backlog")
        if not self._up:
            return SendResult(SendStatus.QUEUED)
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), self._ack_timeout)
        except TimeoutError:
            return SendResult(SendStatus.QUEUED)

    async def discover(self, filters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Peers of this room matching ``filters``; raises :class:`SignalingError` if refused or offline."""
        request: dict[str, Any] = {"filters": dict(filters or {})}
        peers: list[dict[str, Any]] = []
        while True:  # the server answers in pages (docs/signaling.md); follow them to the end
            ack = await self._request("discover_peers", request)
            peers.extend(ack["peers"])
            cursor = ack.get("next_cursor")
            if not isinstance(cursor, str) or not cursor:
                return peers
            request["cursor"] = cursor

    async def update_metadata(self, update: Mapping[str, Any]) -> bool:
        """Merge ``update`` into the metadata (``properties`` merge, ``null`` deletes) and publish it.

        Returns True if the server stored it now; when offline it is registered on reconnection.
        Raises :class:`SignalingError` for invalid metadata (nothing changes then).
        """
        try:
            checked = parse_metadata(dict(update), max_bytes=1 << 30, allow_null=True)
        except ProtocolError as exc:
            raise SignalingError(exc.code, exc.message) from None
        self._metadata = merge_metadata(self._metadata, checked)
        if not self._up:
            return False
        try:
            await self._request("update_metadata", {"metadata": checked})
        except SignalingError as exc:
            if exc.code in (ErrorCode.NOT_CONNECTED, ErrorCode.TIMEOUT):
                return False
            raise
        self._auth_metadata = dict(self._metadata)
        return True

    # -- connection supervisor -------------------------------------------------------------------------------

    def _auth(self) -> dict[str, Any]:
        self._auth_metadata = dict(self._metadata)
        auth: dict[str, Any] = {
            "token": self._token,
            "peer_id": self.peer_id,
            "role": self.role,
            "metadata": self._auth_metadata,
        }
        if self.resume_secret:
            auth["resume_secret"] = self.resume_secret
        return auth

    def _new_sio(
        self, welcomed: asyncio.Event, dropped: asyncio.Event, refusal: list[Any]
    ) -> socketio.AsyncClient:
        sio = socketio.AsyncClient(
            reconnection=False,
            logger=False,
            engineio_logger=False,
            handle_sigint=False,
            serializer=JsonPacket,
        )

        def current() -> bool:
            return self._sio is sio

        async def on_welcome(data: Any) -> None:
            if isinstance(data, dict) and isinstance(data.get("resume_secret"), str):
                self.resume_secret = data["resume_secret"]
            welcomed.set()

        async def on_connect_error(data: Any = None) -> None:
            refusal.append(data)

        async def on_disconnect(*_args: Any) -> None:
            if current():
                self._link_lost()
            dropped.set()

        async def on_replaced(*_args: Any) -> None:
            self._replaced = True
            log_event(log, logging.ERROR, "session_replaced", peer_id=self.peer_id)

        def on_peer_message(data: Any) -> None:
            if not current():
                return
            if isinstance(data, dict) and isinstance(data.get("from_peer_id"), str):
                payload = data.get("payload")
                if isinstance(payload, dict):
                    self._inbox.put_nowait((data["from_peer_id"], payload))
                    return
            log_event(log, logging.WARNING, "malformed_delivery", peer_id=self.peer_id)

        sio.on("welcome", on_welcome)
        sio.on("connect_error", on_connect_error)
        sio.on("disconnect", on_disconnect)
        sio.on("session_replaced", on_replaced)
        sio.on("peer_message", on_peer_message)
        return sio

    async def _attempt(self) -> asyncio.Event | None:
        """One connection attempt; returns the event set when the link drops, or None on failure."""
        welcomed, dropped, refusal = asyncio.Event(), asyncio.Event(), list[Any]()
        sio = self._new_sio(welcomed, dropped, refusal)
        self._sio = sio
        try:
            await sio.connect(
                self.url, auth=self._auth, transports=["websocket"], wait_timeout=self._ack_timeout
            )
            async with asyncio.timeout(self._ack_timeout):
                await welcomed.wait()
        except (socketio.exceptions.ConnectionError, TimeoutError, OSError) as exc:
            with contextlib.suppress(Exception):
                await sio.disconnect()
            code, message = self._refusal_of(refusal, exc)
            if (
                self._first is not None
                and not self._first.done()
                and any(isinstance(r, dict) for r in refusal)
            ):
                self._first.set_exception(SignalingError(code, message))
            log_event(log, logging.WARNING, "connect_failed", peer_id=self.peer_id, code=code, reason=message)
            return None
        self._up = True
        return dropped

    @staticmethod
    def _refusal_of(refusal: list[Any], exc: BaseException) -> tuple[str, str]:
        for data in refusal:
            if isinstance(data, dict):
                extra = data.get("data")
                code = extra.get("code") if isinstance(extra, dict) else None
                return str(code or ErrorCode.AUTH_FAILED), str(data.get("message", "refused"))
        return str(ErrorCode.NOT_CONNECTED), str(exc) or type(exc).__name__

    async def _supervise(self) -> None:
        delay = self._backoff[0]
        while not self._closing.is_set() and not self._replaced:
            dropped = await self._attempt()
            if dropped is not None:
                delay = self._backoff[0]
                await self._on_link_up()
                await dropped.wait()
                await _call_hook(self._on_disconnect)
                self.reconnects += 1
                if self._closing.is_set() or self._replaced:
                    break
                log_event(log, logging.WARNING, "link_lost", peer_id=self.peer_id, queued=len(self._backlog))
            sleep = delay * random.uniform(0.5, 1.0)
            delay = min(delay * 2, self._backoff[1])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), sleep)

    async def _on_link_up(self) -> None:
        log_event(log, logging.INFO, "connected", peer_id=self.peer_id, queued=len(self._backlog))
        if self._metadata != self._auth_metadata:  # changed during the handshake
            with contextlib.suppress(SignalingError):
                await self._request(
                    "update_metadata", {"metadata": metadata_delta(self._auth_metadata, self._metadata)}
                )
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        self._wake.set()
        await _call_hook(self._on_connect)

    def _link_lost(self) -> None:
        self._up = False
        for fut in self._inflight:
            if not fut.done():
                fut.set_exception(_LinkDown())

    # -- requests and the send queue -------------------------------------------------------------------------

    async def _call(self, event: str, data: dict[str, Any]) -> Any:
        sio = self._sio
        if sio is None or not self._up:
            raise _LinkDown()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight.add(fut)

        def on_ack(*args: Any) -> None:
            if not fut.done():
                fut.set_result(args[0] if args else None)

        try:
            try:
                await sio.emit(event, data, callback=on_ack)
            except socketio.exceptions.SocketIOError as exc:
                raise _LinkDown() from exc
            async with asyncio.timeout(self._ack_timeout):
                return await fut
        finally:
            self._inflight.discard(fut)

    async def _request(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        try:
            ack = await self._call(event, data)
        except _LinkDown:
            raise SignalingError(ErrorCode.NOT_CONNECTED, f"{event}: not connected") from None
        except TimeoutError:
            raise SignalingError(ErrorCode.TIMEOUT, f"{event}: no answer in {self._ack_timeout}s") from None
        if not isinstance(ack, dict) or not ack.get("ok"):
            code, message = (ack.get("code"), ack.get("message")) if isinstance(ack, dict) else (None, None)
            raise SignalingError(str(code or ErrorCode.INTERNAL_ERROR), str(message or f"{event} failed"))
        return ack

    @staticmethod
    def _result(ack: Any) -> SendResult:
        if isinstance(ack, dict) and ack.get("ok") is True:
            return SendResult(SendStatus.DELIVERED)
        if isinstance(ack, dict):
            return SendResult(SendStatus.REFUSED, str(ack.get("code")), str(ack.get("message")))
        return SendResult(SendStatus.REFUSED, ErrorCode.INTERNAL_ERROR, f"unexpected ack {ack!r}")

    def _enqueue(self, item: _Outgoing, reason: str) -> None:
        item.queued_at = asyncio.get_running_loop().time()
        bisect.insort(self._backlog, item, key=lambda i: i.seq)
        level = logging.DEBUG if reason in ("backlog", "rate_limited") else logging.ERROR
        log_event(
            log, level, "send_queued", peer_id=self.peer_id, to_peer_id=item.to_peer_id, reason=reason,
            queued=len(self._backlog),
        )  # fmt: skip

    async def _flush_loop(self) -> None:
        """Send the backlog in order per destination; a target that is not (yet) back is retried for a while."""
        retry: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), retry)
            self._wake.clear()
            retry = None
            blocked: set[str] = set()
            for item in list(self._backlog):
                if not self._up:
                    break
                if item.to_peer_id in blocked:
                    continue
                body = {"to_peer_id": item.to_peer_id, "payload": item.payload}
                try:
                    ack = await self._call("peer_message", body)
                except _LinkDown:
                    break
                except TimeoutError:
                    blocked.add(item.to_peer_id)
                    retry = 1.0
                    continue
                result = self._result(ack)
                if result.code == ErrorCode.RATE_LIMITED:  # wait for the server's bucket to refill
                    retry = 0.2
                    break
                waited = loop.time() - item.queued_at
                if result.code == ErrorCode.PEER_NOT_FOUND and waited < self._queued_peer_wait:
                    blocked.add(item.to_peer_id)  # the target may still be reconnecting
                    retry = min(retry or 0.25, 0.25)
                    continue
                with contextlib.suppress(ValueError):
                    self._backlog.remove(item)
                if result.status is SendStatus.REFUSED:
                    log_event(
                        log, logging.ERROR, "queued_send_refused", peer_id=self.peer_id,
                        to_peer_id=item.to_peer_id, code=result.code,
                    )  # fmt: skip
                if not item.future.done():
                    item.future.set_result(result)

    async def _dispatch_loop(self) -> None:
        while True:
            from_peer_id, payload = await self._inbox.get()
            await _call_hook(self._on_peer_message, from_peer_id, payload)
