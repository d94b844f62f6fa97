"""A bare Socket.IO-over-WebSocket peer on a plain TCP stream, for hostile tests.

Unlike a library client it reads only when told to: it can send frames that no library would build
(nesting past any decoder's limit) and it can stop reading altogether (a slow reader).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from typing import Any
from urllib.parse import urlsplit


class RawSocketIO:
    """One Engine.IO v4 WebSocket connection; ``send`` and ``recv`` move Socket.IO frames as text."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str, *, rcvbuf: int | None = None) -> RawSocketIO:
        """Connect and finish the WebSocket upgrade (nothing of Socket.IO yet)."""
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        if rcvbuf is not None:
            import socket

            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        status = await reader.readline()
        if b" 101 " not in status:
            raise ConnectionError(f"upgrade refused: {status!r}")
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        return cls(reader, writer)

    async def send(self, text: str | bytes) -> None:
        """Send one (masked) text frame, or a binary frame for ``bytes``."""
        data = text.encode() if isinstance(text, str) else text
        opcode = 0x1 if isinstance(text, str) else 0x2
        header = bytes([0x80 | opcode])
        n = len(data)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data)) if n < 4096 else _mask(data, mask)
        self.writer.write(header + mask + masked)
        await self.writer.drain()

    async def recv(self) -> str:
        """The next text frame (answers pings on the way)."""
        while True:
            first, second = await self.reader.readexactly(2)
            n = second & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(n)
            if first & 0x0F == 0x8:
                raise ConnectionError("closed by the server")
            text = payload.decode()
            if text == "2":  # Engine.IO ping
                await self.send("3")
                continue
            return text

    async def recv_until(self, prefix: str, timeout: float = 10.0) -> str:
        """Skip frames until one starts with ``prefix`` (TimeoutError after ``timeout`` seconds)."""
        async with asyncio.timeout(timeout):
            while not (frame := await self.recv()).startswith(prefix):
                pass
        return frame

    async def join(self, auth: dict[str, Any]) -> None:
        """Socket.IO CONNECT with ``auth``; waits for the server's answer."""
        await self.recv_until("0")  # Engine.IO open
        await self.send("40" + json.dumps(auth))
        answer = await self.recv_until("4")
        if not answer.startswith("40"):
            raise ConnectionError(f"connect refused: {answer}")

    async def call(self, ack_id: int, event: str, data_json: str) -> Any:
        """Emit ``event`` with already-encoded JSON data and wait for its ack (the decoded ack list)."""
        await self.send(f"42{ack_id}[{json.dumps(event)},{data_json}]")
        frame = await self.recv_until(f"43{ack_id}[")
        return json.loads(frame[len(f"43{ack_id}") :])

    def close(self) -> None:
        """Drop the TCP connection."""
        self.writer.close()


def _mask(data: bytes, mask: bytes) -> bytes:
    whole = mask * (len(data) // 4 + 1)
    return (int.from_bytes(data, "big") ^ int.from_bytes(whole[: len(data)], "big")).to_bytes(
        len(data), "big"
    )
