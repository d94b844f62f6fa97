"""Requests over the signaling link that wait for their ack (`discover_peers`, `update_metadata`, `hold`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import socketio

from fsm_worker.protocol.errors import SignalingCode


class SignalingError(Exception):
    """The server refused a connection or a request."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _LinkDown(Exception):
    """The link dropped before an ack arrived."""


class AckRequests:
    """The requests awaiting their ack; `link_lost` fails them all (`NOT_CONNECTED`)."""

    def __init__(self, ack_timeout: float) -> None:
        self._ack_timeout = ack_timeout
        self._pending: set[asyncio.Future[Any]] = set()

    def link_lost(self) -> None:
        for future in self._pending:
            if not future.done():
                future.set_exception(_LinkDown())

    async def request(
        self,
        sio: socketio.AsyncClient,
        event: str,
        data: dict[str, Any],
        on_sent: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Emit `event` and wait for its ack; `on_sent` is called once it left (then the ack is awaited)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.add(future)

        def on_ack(*args: Any) -> None:
            if not future.done():
                future.set_result(args[0] if args else None)

        try:
            await sio.emit(event, data, callback=on_ack)
            if on_sent is not None:
                on_sent()
            async with asyncio.timeout(self._ack_timeout):
                ack = await future
        except (_LinkDown, socketio.exceptions.SocketIOError):
            raise SignalingError(SignalingCode.NOT_CONNECTED, f"{event}: not connected") from None
        except TimeoutError:
            raise SignalingError(
                SignalingCode.TIMEOUT, f"{event}: no answer in {self._ack_timeout}s"
            ) from None
        finally:
            self._pending.discard(future)
        if not isinstance(ack, dict) or not ack.get("ok"):
            code, message = (ack.get("code"), ack.get("message")) if isinstance(ack, dict) else (None, None)
            raise SignalingError(str(code or SignalingCode.INTERNAL_ERROR), str(message or f"{event} failed"))
        return ack
