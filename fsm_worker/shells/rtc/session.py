"""Offer/answer helpers for a data-channel-only aiortc session.

aiortc does not trickle ICE: ``setLocalDescription`` returns once gathering is complete, so the
local description already holds every candidate and the helpers return full SDP strings.
Every wait is bounded and fails with :class:`RtcSetupError` (or its timeout subclass).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription

DEFAULT_LABEL = "fsm-transfer"
DEFAULT_SETUP_TIMEOUT = 15.0

_FAILED_STATES = frozenset({"failed", "closed"})


class RtcSetupError(Exception):
    """The peer connection or its data channel could not be set up."""


class RtcSetupTimeout(RtcSetupError, TimeoutError):
    """A setup step did not finish within its timeout."""


async def _bounded(step: str, coro: Any, timeout: float) -> Any:
    try:
        async with asyncio.timeout(timeout):
            return await coro
    except TimeoutError as exc:
        raise RtcSetupTimeout(f"{step}: no result within {timeout:g} s") from exc
    except RtcSetupError:
        raise
    except Exception as exc:  # aiortc raises ValueError/InvalidStateError/InvalidAccessError
        raise RtcSetupError(f"{step}: {type(exc).__name__}: {exc}") from exc


async def create_offer(
    pc: RTCPeerConnection,
    label: str = DEFAULT_LABEL,
    *,
    timeout: float = DEFAULT_SETUP_TIMEOUT,
) -> tuple[RTCDataChannel, str]:
    """Offerer: create one ordered, reliable data channel and return it with the complete offer SDP."""
    channel = pc.createDataChannel(label, ordered=True)

    async def offer() -> str:
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)

    sdp: str = await _bounded("create offer", offer(), timeout)
    return channel, sdp


async def create_answer(
    pc: RTCPeerConnection, offer_sdp: str, *, timeout: float = DEFAULT_SETUP_TIMEOUT
) -> str:
    """Answerer: apply the remote offer and return the complete answer SDP.

    Create an :class:`IncomingChannel` for ``pc`` *before* calling this, so the channel event
    cannot be missed.
    """

    if "\nm=application " not in offer_sdp.replace("\r\n", "\n"):
        raise RtcSetupError("create answer: the offer has no data channel (no m=application section)")

    async def answer() -> str:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    result: str = await _bounded("create answer", answer(), timeout)
    return result


async def accept_answer(
    pc: RTCPeerConnection, answer_sdp: str, *, timeout: float = DEFAULT_SETUP_TIMEOUT
) -> None:
    """Offerer: apply the remote answer."""
    await _bounded(
        "apply answer", pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer")), timeout
    )


def _watch_failure(pc: RTCPeerConnection, fut: asyncio.Future[Any]) -> Any:
    def on_state() -> None:
        if pc.connectionState in _FAILED_STATES and not fut.done():
            fut.set_exception(
                RtcSetupError(f"peer connection {pc.connectionState} before the channel opened")
            )

    pc.on("connectionstatechange", on_state)
    on_state()
    return on_state


async def _wait(pc: RTCPeerConnection, fut: asyncio.Future[Any], step: str, timeout: float) -> Any:
    watcher = _watch_failure(pc, fut)
    try:
        return await _bounded(step, asyncio.shield(fut), timeout)
    finally:
        pc.remove_listener("connectionstatechange", watcher)


async def wait_channel_open(
    pc: RTCPeerConnection, channel: RTCDataChannel, *, timeout: float = DEFAULT_SETUP_TIMEOUT
) -> RTCDataChannel:
    """Offerer: wait until ``channel`` is open; fail early if the connection fails or closes."""
    if channel.readyState == "open":
        return channel
    fut: asyncio.Future[RTCDataChannel] = asyncio.get_running_loop().create_future()

    def on_open() -> None:
        if not fut.done():
            fut.set_result(channel)

    def on_close() -> None:
        if not fut.done():
            fut.set_exception(RtcSetupError("data channel closed before it opened"))

    channel.on("open", on_open)
    channel.on("close", on_close)
    try:
        result: RTCDataChannel = await _wait(pc, fut, "open data channel", timeout)
        return result
    finally:
        channel.remove_listener("open", on_open)
        channel.remove_listener("close", on_close)


class IncomingChannel:
    """Answerer: catches the offerer's data channel (create it before applying the offer).

    ``on_channel`` runs synchronously inside aiortc's ``datachannel`` event, before any message
    on the channel can be dispatched: attach message handlers there, or the peer's first
    messages may arrive before anyone listens (``wait_open`` resumes a few loop turns later).
    """

    def __init__(
        self,
        pc: RTCPeerConnection,
        label: str | None = DEFAULT_LABEL,
        on_channel: Callable[[RTCDataChannel], None] | None = None,
    ) -> None:
        self._pc = pc
        self._label = label
        self._on_channel_cb = on_channel
        self._fut: asyncio.Future[RTCDataChannel] = asyncio.get_running_loop().create_future()
        pc.on("datachannel", self._on_channel)

    def _on_channel(self, channel: RTCDataChannel) -> None:
        if self._fut.done():
            return
        if self._label is not None and channel.label != self._label:
            self._fail(f"unexpected data channel label {channel.label!r}")
        elif (
            not channel.ordered or channel.maxRetransmits is not None or channel.maxPacketLifeTime is not None
        ):
            self._fail("data channel must be ordered and reliable")
        else:
            try:
                if self._on_channel_cb is not None:
                    self._on_channel_cb(channel)
            except Exception as exc:
                self._fail(f"on_channel callback failed: {exc!r}")
            else:
                self._fut.set_result(channel)

    def _fail(self, message: str) -> None:
        self._fut.set_exception(RtcSetupError(message))
        self._fut.exception()  # mark retrieved: nobody may be waiting yet; wait_open re-raises it

    async def wait_open(self, *, timeout: float = DEFAULT_SETUP_TIMEOUT) -> RTCDataChannel:
        """Wait for the offerer's channel (aiortc announces it already open)."""
        try:
            channel: RTCDataChannel = await _wait(self._pc, self._fut, "receive data channel", timeout)
        finally:
            self._pc.remove_listener("datachannel", self._on_channel)
        return await wait_channel_open(self._pc, channel, timeout=timeout)
