"""A resilient Socket.IO connection to the signaling server, for workers and job clients.

- reconnection is python-socketio's own (backoff with jitter); the ``auth`` it presents is a callable,
  re-evaluated on each attempt, so it carries the latest resume secret (the peer id comes back) and metadata;
- :meth:`SignalingClient.post` never blocks and never raises: messages leave at once, many acks in flight per
  peer, in order per destination; while the link is down (or when an ack is lost with the link) they wait in
  a backlog and go after reconnection. What waits for one peer is bounded (``max_queued_per_peer``): beyond
  it a message is refused with ``QUEUE_FULL`` and the others are not held up;
- incoming ``peer_message`` events are handed to the callback one at a time, in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import socketio

from fsm_worker.json_packet import JsonPacket
from fsm_worker.logfmt import log_event
from fsm_worker.protocol.errors import SignalingCode, SignalingRefusal
from fsm_worker.protocol.signaling import merge_metadata, metadata_delta, parse_metadata
from fsm_worker.shells.send_queue import Outgoing, SendQueues, SendResult, SendStatus
from fsm_worker.shells.signaling_requests import AckRequests, SignalingError

log = logging.getLogger("fsm_worker.shells.signaling")

PeerMessageCallback = Callable[[str, dict[str, Any]], Awaitable[None] | None]
Hook = Callable[[], Awaitable[None] | None]

#: How many messages to one peer may await their ack at once, and wait for one peer (the worker's settings).
DEFAULT_MAX_INFLIGHT_PER_PEER = 64
DEFAULT_MAX_QUEUED_PER_PEER = 1024

#: The refusal code of a message that finds its peer's queue full (a link-side limit, not the server's).
QUEUE_FULL = SignalingCode.QUEUE_FULL

__all__ = ["QUEUE_FULL", "SendResult", "SendStatus", "SignalingClient", "SignalingError"]


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
        max_queued_per_peer: int = DEFAULT_MAX_QUEUED_PER_PEER,
        max_inflight_per_peer: int = DEFAULT_MAX_INFLIGHT_PER_PEER,
    ) -> None:
        """`backoff_*` are python-socketio's reconnection delays; `queued_peer_wait` is how long a message that
        waited for the link keeps retrying a peer the server does not know (it may be reconnecting too)."""
        self.url = url
        self.peer_id = peer_id
        self.role = role
        self.resume_secret = resume_secret
        self._token = token
        self._metadata = parse_metadata(dict(metadata or {}), max_bytes=1 << 30, allow_null=False)
        self._auth_metadata: dict[str, Any] = {}
        self._on_peer_message = on_peer_message
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._ack_timeout = ack_timeout
        self._backoff = (backoff_initial, backoff_max)
        self._queues = SendQueues(
            peer_id,
            max_queued=max_queued_per_peer,
            window=max_inflight_per_peer,
            queued_peer_wait=queued_peer_wait,
            ack_timeout=ack_timeout,
        )
        self._sio: socketio.AsyncClient | None = None
        self._up = False
        self._closing = False
        self._replaced = False
        self._welcomed_once = False
        #: The server's `welcome` said it counts holds (the `hold` op; issue 10 item 8).
        self.holds_offered = False
        self._first: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._requests = AckRequests(ack_timeout)
        self._wake = asyncio.Event()
        self._inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
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
        """Messages not yet acknowledged by the server (waiting for the link, or in flight)."""
        return self._queues.queued

    @property
    def in_flight(self) -> int:
        """Messages sent and not yet acknowledged (up to ``max_inflight_per_peer`` per destination)."""
        return self._queues.in_flight

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect (retrying transport errors until ``timeout``); raise :class:`SignalingError` on refusal."""
        if self._tasks:
            raise RuntimeError("connect() may be called once")
        self._first = asyncio.get_running_loop().create_future()
        self._sio = self._new_sio()
        attempt = asyncio.create_task(
            self._sio.connect(
                self.url,
                auth=self._auth,
                transports=["websocket"],
                wait_timeout=self._ack_timeout,
                retry=True,
            ),
            name=f"signaling-connect-{self.peer_id}",
        )
        attempt.add_done_callback(self._connect_done)
        self._tasks = [
            attempt,
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
        """Disconnect and stop reconnecting; what is still queued is dropped (and logged)."""
        self._closing = True
        sio = self._sio
        if sio is not None:
            with contextlib.suppress(Exception):
                await sio.shutdown()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if sio is not None:  # also closes the HTTP session of an attempt that never connected
            with contextlib.suppress(Exception):
                await sio.eio.disconnect()
        if self.queued:
            log_event(log, logging.WARNING, "closed_with_queued", peer_id=self.peer_id, count=self.queued)
        self._queues.drop_all()
        self._up = False

    def post(self, to_peer_id: str, payload: Mapping[str, Any]) -> asyncio.Future[SendResult]:
        """Send a peer message without waiting: the future tells what became of it. Never raises."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SendResult] = loop.create_future()
        if self._closing:
            future.set_result(SendResult(SendStatus.REFUSED, SignalingCode.NOT_CONNECTED, "client is closed"))
            return future
        self._queues.add(to_peer_id, payload, future, loop.time(), self._up)
        self._wake.set()
        return future

    async def send(self, to_peer_id: str, payload: Mapping[str, Any]) -> SendResult:
        """Send a peer message and wait for its ack (at most ``ack_timeout``; then it stays queued)."""
        future = self.post(to_peer_id, payload)
        if future.done() or not self._up:
            return future.result() if future.done() else SendResult(SendStatus.QUEUED)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._ack_timeout)
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

    async def hold(
        self, request: Mapping[str, Any], on_sent: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Send one `hold` op (docs/signaling.md) and return its ack; raises :class:`SignalingError` if refused
        (`HOLD_LIMIT`: over a cap), offline or unanswered. `on_sent`: called when it left, before the ack."""
        return await self._request("hold", dict(request), on_sent)

    async def update_metadata(self, update: Mapping[str, Any]) -> bool:
        """Merge ``update`` into the metadata (``properties`` merge, ``null`` deletes) and publish it.

        Returns True if the server stored it now; when offline it is registered on reconnection.
        Raises :class:`SignalingError` for invalid metadata (nothing changes then).
        """
        try:
            checked = parse_metadata(dict(update), max_bytes=1 << 30, allow_null=True)
        except SignalingRefusal as exc:
            raise SignalingError(exc.code, exc.message) from None
        self._metadata = merge_metadata(self._metadata, checked)
        if not self._up:
            return False
        try:
            await self._request("update_metadata", {"metadata": checked})
        except SignalingError as exc:
            if exc.code in (SignalingCode.NOT_CONNECTED, SignalingCode.TIMEOUT):
                return False
            raise
        self._auth_metadata = dict(self._metadata)
        return True

    # -- the connection: python-socketio connects and reconnects; these handlers follow it --------------------

    def _auth(self) -> dict[str, Any]:
        """Evaluated by python-socketio on every (re)connection attempt."""
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

    def _new_sio(self) -> socketio.AsyncClient:
        sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_delay=self._backoff[0],
            reconnection_delay_max=self._backoff[1],
            randomization_factor=0.5,
            logger=False,
            engineio_logger=False,
            handle_sigint=False,
            serializer=JsonPacket,
        )
        sio.on("welcome", self._on_welcome)
        sio.on("connect_error", self._on_connect_error)
        sio.on("disconnect", self._on_link_down)
        sio.on("session_replaced", self._on_replaced)
        sio.on("peer_message", self._on_delivery)
        return sio

    def _connect_done(self, attempt: asyncio.Task[None]) -> None:
        if attempt.cancelled() or self._first is None or self._first.done():
            return
        error = attempt.exception()
        if error is not None:
            self._first.set_exception(
                SignalingError(SignalingCode.NOT_CONNECTED, str(error) or type(error).__name__)
            )

    async def _on_welcome(self, data: Any = None) -> None:
        if isinstance(data, dict) and isinstance(data.get("resume_secret"), str):
            self.resume_secret = data["resume_secret"]
        self.holds_offered = isinstance(data, dict) and isinstance(data.get("holds"), dict)
        self._up = True
        if self._welcomed_once:
            self.reconnects += 1
        self._welcomed_once = True
        log_event(log, logging.INFO, "connected", peer_id=self.peer_id, queued=self.queued)
        self._tasks.append(asyncio.create_task(self._on_link_up(), name=f"signaling-up-{self.peer_id}"))
        self._wake.set()

    async def _on_link_up(self) -> None:
        if self._metadata != self._auth_metadata:  # changed during the handshake
            with contextlib.suppress(SignalingError):
                await self._request(
                    "update_metadata", {"metadata": metadata_delta(self._auth_metadata, self._metadata)}
                )
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        await _call_hook(self._on_connect)

    async def _on_connect_error(self, data: Any = None) -> None:
        if not isinstance(data, dict):  # a transport error: python-socketio retries
            return
        extra = data.get("data")
        code = str((extra.get("code") if isinstance(extra, dict) else None) or SignalingCode.AUTH_FAILED)
        message = str(data.get("message", "refused"))
        log_event(log, logging.WARNING, "connect_refused", peer_id=self.peer_id, code=code, reason=message)
        if self._first is not None and not self._first.done():
            self._first.set_exception(SignalingError(code, message))

    async def _on_link_down(self, *_reason: Any) -> None:
        if not self._up:
            return
        self._up = False
        self._requests.link_lost()
        self._queues.link_lost()
        if not self._closing and not self._replaced:
            log_event(log, logging.WARNING, "link_lost", peer_id=self.peer_id, queued=self.queued)
        self._tasks.append(asyncio.create_task(_call_hook(self._on_disconnect)))

    async def _on_replaced(self, *_args: Any) -> None:
        self._replaced = True  # the server disconnects this session next; python-socketio does not reconnect
        log_event(log, logging.ERROR, "session_replaced", peer_id=self.peer_id)

    def _on_delivery(self, data: Any) -> None:
        if isinstance(data, dict) and isinstance(data.get("from_peer_id"), str):
            payload = data.get("payload")
            if isinstance(payload, dict):
                self._inbox.put_nowait((data["from_peer_id"], payload))
                return
        log_event(log, logging.WARNING, "malformed_delivery", peer_id=self.peer_id)

    # -- requests and the send queues ------------------------------------------------------------------------

    async def _request(
        self, event: str, data: dict[str, Any], on_sent: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Emit `event` and wait for its ack; `on_sent` is called once it left (then the ack is awaited)."""
        sio = self._sio
        if sio is None or not self._up:
            raise SignalingError(SignalingCode.NOT_CONNECTED, f"{event}: not connected")
        return await self._requests.request(sio, event, data, on_sent)

    async def _flush_loop(self) -> None:
        """Emit what waits, in order per destination, up to the in-flight window of each; never awaits an ack."""
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._queues.next_wake(loop.time()))
            self._wake.clear()
            if not self._up or self._sio is None:
                continue
            for item in self._queues.ready(loop.time()):
                if not await self._emit(self._sio, item):
                    break

    async def _emit(self, sio: socketio.AsyncClient, item: Outgoing) -> bool:
        def on_ack(*args: Any) -> None:
            self._queues.acked(item, args[0] if args else None, asyncio.get_running_loop().time())
            self._wake.set()

        try:
            await sio.emit(
                "peer_message", {"to_peer_id": item.to_peer_id, "payload": item.payload}, callback=on_ack
            )
        except socketio.exceptions.SocketIOError:
            self._queues.unsent(item)
            return False
        return True

    async def _dispatch_loop(self) -> None:
        while True:
            from_peer_id, payload = await self._inbox.get()
            await _call_hook(self._on_peer_message, from_peer_id, payload)
