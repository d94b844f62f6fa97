"""Flow-controlled sending over a data channel (``bufferedAmountLowThreshold`` + event)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import attrs

from fsm_worker.protocol.transfer.frames import Frame, encode_frame
from fsm_worker.shells.transfer.errors import ChannelClosedError, FrameCode, TransferError

KiB = 1024
MiB = 1024 * KiB


class DataChannel(Protocol):
    """The part of aiortc's ``RTCDataChannel`` (W3C shape, pyee events) the transfer layer uses."""

    @property
    def readyState(self) -> str: ...
    @property
    def bufferedAmount(self) -> int: ...

    bufferedAmountLowThreshold: int

    def send(self, data: str | bytes) -> None: ...
    def on(self, event: str, f: Callable[..., Any]) -> Any: ...
    def remove_listener(self, event: str, f: Callable[..., Any]) -> None: ...


def off(channel: DataChannel, event: str, f: Callable[..., Any]) -> None:
    """Remove a listener; aiortc drops all listeners itself on close, so a missing one is fine."""
    with contextlib.suppress(KeyError, ValueError):
        channel.remove_listener(event, f)


def _positive(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive")


@attrs.frozen
class TransferTuning:
    """Sender parameters: chunk size and the buffered-amount window.

    The sender stops queueing when ``bufferedAmount`` exceeds ``high_water`` and resumes on the
    ``bufferedamountlow`` event, fired when it falls to ``low_water``; waiting longer than
    ``stall_timeout`` for that event fails with ``TIMEOUT``. ``chunk_size`` must not
    exceed the peer's SCTP max-message-size (64 KiB is safe for browsers; aiortc accepts 256 KiB).
    """

    chunk_size: int = attrs.field(default=64 * KiB, validator=_positive)
    high_water: int = attrs.field(default=1 * MiB, validator=_positive)
    low_water: int = attrs.field(default=256 * KiB, validator=attrs.validators.ge(0))
    stall_timeout: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))

    @low_water.validator
    def _check_low(self, _attribute: attrs.Attribute[int], value: int) -> None:
        if value >= self.high_water:
            raise ValueError("low_water must be below high_water")


ProgressFn = Callable[[int], None]


class ChannelWriter:
    """Sends control frames and chunks; awaits the channel's low-water event, never sleeps."""

    def __init__(self, channel: DataChannel, tuning: TransferTuning) -> None:
        self.channel = channel
        self.tuning = tuning
        self.chunk_bytes_sent = 0
        self.chunks_sent = 0
        self._low = asyncio.Event()
        self._low.set()
        channel.bufferedAmountLowThreshold = tuning.low_water
        channel.on("bufferedamountlow", self._low.set)
        channel.on("close", self._low.set)

    def detach(self) -> None:
        """Stop listening to the channel."""
        off(self.channel, "bufferedamountlow", self._low.set)
        off(self.channel, "close", self._low.set)
        self._low.set()

    @property
    def is_open(self) -> bool:
        """Whether the channel can still send."""
        return self.channel.readyState == "open"

    def _send(self, data: str | bytes) -> None:
        if not self.is_open:
            raise ChannelClosedError(f"data channel is {self.channel.readyState}")
        self.channel.send(data)

    def send_frame(self, frame: Frame) -> None:
        """Send one control frame (small; not flow-controlled)."""
        self._send(encode_frame(frame))

    async def drain(self) -> None:
        """Wait until ``bufferedAmount`` is at most ``high_water``."""
        while self.channel.bufferedAmount > self.tuning.high_water:
            if not self.is_open:
                raise ChannelClosedError(f"data channel is {self.channel.readyState}")
            self._low.clear()
            try:
                async with asyncio.timeout(self.tuning.stall_timeout):
                    await self._low.wait()
            except TimeoutError as exc:
                raise TransferError(
                    FrameCode.TIMEOUT, f"send buffer did not drain within {self.tuning.stall_timeout:g} s"
                ) from exc

    async def send_chunk(self, data: bytes) -> None:
        """Send one binary chunk after waiting for buffer room."""
        await self.drain()
        self._send(data)
        self.chunk_bytes_sent += len(data)
        self.chunks_sent += 1

    async def send_file(
        self, path: Path, offset: int, size: int, on_progress: ProgressFn | None = None
    ) -> None:
        """Send bytes ``[offset, size)`` of ``path`` as chunks; ``on_progress(done)`` after each."""
        done = offset
        with path.open("rb") as f:
            f.seek(offset)
            while done < size:
                data = f.read(min(self.tuning.chunk_size, size - done))
                if not data:
                    raise OSError(f"{path.name}: file shrank to {done} bytes while sending")
                await self.send_chunk(data)
                done += len(data)
                if on_progress is not None:
                    on_progress(done)
