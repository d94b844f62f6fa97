"""The server's gate at the Engine.IO level: what a connection may cost before any handler runs.

It sits between Engine.IO and python-socketio (it takes over their ``connect`` / ``message`` /
``disconnect`` hooks and passes on what it admits):

- admission: total and per-address connection caps; a connection that has not authenticated within
  ``auth_timeout_seconds`` is closed (:class:`~fsm_worker.server.limits.Admission` holds the deadlines);
- a token bucket per connection: a frame over the rate is refused with ``RATE_LIMITED`` (answered on the
  wire without decoding it), never reaches a handler, and the connection is not read again until
  ``rate_limit_hold_seconds`` of its rate is back (backpressure: about one refusal per batch of admitted
  frames); a reply is paid by the peer that asked (:class:`~fsm_worker.server.limits.ReplyCredits`: a peer
  message to someone who sent you one gives its token back), so a flooder cannot drain its target's bucket;
- frames that cannot be decoded (binary frames, JSON nested past the decoder's limit, anything that makes
  python-socketio raise) get an ``INVALID_FRAME`` answer when they asked for one, and a log line only for
  the first of each kind per connection, then one summary per ``notice_log_interval_seconds``;
- bounded send buffers: a connection whose unsent data passes ``max_send_buffer_bytes`` (it does not read)
  is dropped with a logged reason.

The decisions are the pure objects of :mod:`fsm_worker.server.limits`; this module only does the IO.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import orjson
import socketio

from fsm_worker.logfmt import log_event
from fsm_worker.protocol.errors import SignalingCode
from fsm_worker.protocol.signaling import error_ack
from fsm_worker.server.config import ServerConfig
from fsm_worker.server.limits import Admission, NoticeLog, ReplyCredits, TokenBucket

log = logging.getLogger("fsm_worker.server.guard")

EIO_SID_KEY = "fsm_worker.eio_sid"
#: Socket.IO EVENT packet on the default namespace asking for an ack: ``2<id>[...]``
_ACK_ID = re.compile(r"2(\d{1,15})\[")
_SWEEP_SECONDS = 1.0


def ack_id_of(frame: str) -> int | None:
    """The ack id an undecoded Socket.IO event frame asks to be answered on, if any."""
    match = _ACK_ID.match(frame, 0, 20)
    return int(match.group(1)) if match else None


@attrs.define
class _Connection:
    address: str
    bucket: TokenBucket
    notices: NoticeLog
    credits: ReplyCredits
    transport: Any = None  # the aiohttp transport, aborted to drop a connection that does not read
    peer_id: str | None = None


class ConnectionGuard:
    """Admission, rate, bad-frame and send-buffer limits for one server node."""

    def __init__(self, sio: socketio.AsyncServer, config: ServerConfig) -> None:
        self.sio = sio
        self.config = config
        self.admission = Admission(
            max_total=config.max_connections,
            max_per_address=config.max_connections_per_address,
            auth_timeout=config.auth_timeout_seconds,
        )
        self.conns: dict[str, _Connection] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        eio = sio.eio
        self._inner_connect: Callable[..., Awaitable[Any]] = eio.handlers["connect"]
        self._inner_message: Callable[..., Awaitable[Any]] = eio.handlers["message"]
        self._inner_disconnect: Callable[..., Awaitable[Any]] = eio.handlers["disconnect"]
        eio.on("connect", self._on_connect)
        eio.on("message", self._on_message)
        eio.on("disconnect", self._on_disconnect)
        limit = f"rate_limit_events_per_second={config.rate_limit_events_per_second:g}"
        burst = f"rate_limit_burst={config.rate_limit_burst}"
        self._rate_refusal = orjson.dumps(
            [error_ack(SignalingCode.RATE_LIMITED, f"too many events: {limit}, {burst}")]
        ).decode()

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the deadline and send-buffer timers (call inside the running loop)."""
        self._tasks = [
            asyncio.create_task(self._deadline_loop(), name="auth-deadlines"),
            asyncio.create_task(self._sweep_loop(), name="send-buffer-sweep"),
        ]

    async def stop(self) -> None:
        """Stop the timers."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def authenticated(self, eio_sid: str, peer_id: str) -> None:
        """The connection holds a peer id now: its authentication deadline is lifted."""
        self.admission.authenticated(eio_sid)
        conn = self.conns.get(eio_sid)
        if conn is not None:
            conn.peer_id = peer_id

    def routed(
        self, sender_eio_sid: str | None, sender: str, recipient_eio_sid: str | None, recipient: str
    ) -> None:
        """A peer message went from ``sender`` to ``recipient`` (a local connection, or None on another node).

        If the sender held a credit toward the recipient, this message is a reply: its token is given back, and
        it earns nothing in turn (else two peers could talk for free). Otherwise the sender paid for it, and the
        recipient may answer it once for free (a credit toward the sender).
        """
        conn = self.conns.get(sender_eio_sid) if sender_eio_sid is not None else None
        if conn is not None and conn.credits.spend(recipient):
            conn.bucket.refund()
            return
        target = self.conns.get(recipient_eio_sid) if recipient_eio_sid is not None else None
        if target is not None:
            target.credits.grant(sender)

    def notice(self, eio_sid: str | None, kind: str, **fields: Any) -> None:
        """Log a refusal of one connection: the first of its kind in full, later ones as summaries."""
        conn = self.conns.get(eio_sid) if eio_sid is not None else None
        if conn is None:
            log_event(log, logging.INFO, kind, **fields)
            return
        full, summary = conn.notices.note(kind, time.monotonic())
        if full:
            log_event(log, logging.WARNING, kind, sid=eio_sid, peer_id=conn.peer_id, **fields)
        if summary:
            self._log_summary(eio_sid, conn, summary)

    @staticmethod
    def _log_summary(eio_sid: str | None, conn: _Connection, summary: dict[str, int]) -> None:
        counts = " ".join(f"{k}:{v}" for k, v in sorted(summary.items()))
        log_event(
            log, logging.WARNING, "refusals_summary", sid=eio_sid, peer_id=conn.peer_id, address=conn.address,
            counts=counts,
        )  # fmt: skip

    # -- Engine.IO hooks ----------------------------------------------------------------------------------

    async def _on_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        request = environ.get("aiohttp.request")
        address = str(getattr(request, "remote", None) or environ.get("REMOTE_ADDR") or "?")
        refusal = self.admission.open(eio_sid, address, time.monotonic())
        if refusal is not None:
            log_event(log, logging.WARNING, "connection_refused", address=address, limit=refusal.setting)
            return refusal.message
        config = self.config
        self.conns[eio_sid] = _Connection(
            address=address,
            bucket=TokenBucket(config.rate_limit_events_per_second, config.rate_limit_burst),
            notices=NoticeLog(config.notice_log_interval_seconds),
            credits=ReplyCredits(config.rate_limit_burst),
            transport=getattr(request, "transport", None),
        )
        environ[EIO_SID_KEY] = eio_sid
        self._wake.set()
        return await self._inner_connect(eio_sid, environ)

    async def _on_message(self, eio_sid: str, data: Any) -> None:
        conn = self.conns.get(eio_sid)
        if conn is None:
            return
        if not conn.bucket.take(time.monotonic()):
            self.notice(eio_sid, "rate_limited", limit="rate_limit_events_per_second")
            await self._answer(eio_sid, data, self._rate_refusal)
            # Hold off reading this connection until rate_limit_hold_seconds of its rate are back: Engine.IO reads
            # a socket's frames one handler at a time, so a flooder waits in its own TCP buffer and gets about
            # one refusal per batch of admitted events (not one per event), whatever it sends.
            await asyncio.sleep(min(conn.bucket.hold(self.config.rate_limit_hold_seconds), 1.0))
            return
        try:
            await self._inner_message(eio_sid, data)
        except Exception as exc:  # python-socketio could not decode or dispatch it
            kind = "binary frame" if isinstance(data, bytes) else "text frame"
            self.notice(eio_sid, "invalid_frame", reason=f"{kind} not decodable: {type(exc).__name__}")
            ack = error_ack(SignalingCode.INVALID_FRAME, f"frame could not be decoded: {type(exc).__name__}")
            await self._answer(eio_sid, data, orjson.dumps([ack]).decode())
        self._check_send_buffer(eio_sid)

    async def _on_disconnect(self, eio_sid: str, *args: Any) -> None:
        self.admission.close(eio_sid)
        conn = self.conns.pop(eio_sid, None)
        if conn is not None:
            summary = conn.notices.due(math.inf)
            if summary:
                self._log_summary(eio_sid, conn, summary)
        await self._inner_disconnect(eio_sid, *args)

    async def _answer(self, eio_sid: str, frame: Any, body: str) -> None:
        ack_id = ack_id_of(frame) if isinstance(frame, str) else None
        if ack_id is not None:
            with contextlib.suppress(Exception):
                await self.sio.eio.send(eio_sid, f"3{ack_id}{body}")

    # -- timers -------------------------------------------------------------------------------------------

    async def _deadline_loop(self) -> None:
        while True:
            deadline = self.admission.next_deadline()
            self._wake.clear()
            if deadline is None:
                await self._wake.wait()
                continue
            delay = deadline - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            for eio_sid in self.admission.expired(time.monotonic()):
                conn = self.conns.get(eio_sid)
                log_event(
                    log, logging.WARNING, "connection_dropped", sid=eio_sid, reason="not authenticated",
                    limit=f"auth_timeout_seconds={self.config.auth_timeout_seconds:g}",
                    address=conn.address if conn else None,
                )  # fmt: skip
                await self.drop(eio_sid)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            for eio_sid in list(self.conns):
                self._check_send_buffer(eio_sid)

    # -- send buffers -------------------------------------------------------------------------------------

    def queued_bytes(self, eio_sid: str) -> int:
        """Bytes waiting in the connection's Engine.IO send queue (not yet written to the socket)."""
        sock = self.sio.eio.sockets.get(eio_sid)
        if sock is None:
            return 0
        queue = getattr(sock.queue, "_queue", ())
        return sum(len(p.data) for p in queue if p is not None and isinstance(p.data, str | bytes))

    def _check_send_buffer(self, eio_sid: str) -> None:
        sock = self.sio.eio.sockets.get(eio_sid)
        if sock is None or sock.queue.qsize() < 2:
            return
        queued = self.queued_bytes(eio_sid)
        over_count = sock.queue.qsize() > self.config.max_send_buffer_messages
        if queued <= self.config.max_send_buffer_bytes and not over_count:
            return
        conn = self.conns.get(eio_sid)
        setting = "max_send_buffer_messages" if over_count else "max_send_buffer_bytes"
        log_event(
            log, logging.WARNING, "connection_dropped", sid=eio_sid, reason="send buffer full (peer not reading)",
            limit=setting, queued_bytes=queued, queued_messages=sock.queue.qsize(),
            peer_id=conn.peer_id if conn else None,
        )  # fmt: skip
        asyncio.get_running_loop().create_task(self.drop(eio_sid))

    async def drop(self, eio_sid: str) -> None:
        """Close a connection at once: abort its transport and let Engine.IO forget it."""
        conn = self.conns.get(eio_sid)
        if conn is not None and conn.transport is not None:
            with contextlib.suppress(Exception):
                conn.transport.abort()
        sock = self.sio.eio.sockets.get(eio_sid)
        if sock is not None:
            with contextlib.suppress(Exception):
                await sock.close(wait=False, abort=True)
            queue = sock.queue
            while not queue.empty():  # free what it never read
                queue.get_nowait()
                queue.task_done()
            queue.put_nowait(None)  # and let its writer task end
