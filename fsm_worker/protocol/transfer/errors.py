"""Exceptions of the transfer protocol (shared by the cores and the shells); codes are `protocol.errors.FrameCode`."""

from __future__ import annotations

from fsm_worker.protocol.errors import FrameCode, FrameError

__all__ = ["ChannelClosedError", "FrameCode", "FrameError", "RemoteTransferError", "TransferError"]


class TransferError(Exception):
    """A transfer failed; ``code`` is the worker's (or a local) error code."""

    def __init__(self, code: str, message: str, name: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.name = name


class RemoteTransferError(TransferError):
    """The worker answered with an ``error`` frame."""


class ChannelClosedError(TransferError):
    """The data channel closed before the operation finished."""

    def __init__(self, message: str = "data channel closed") -> None:
        super().__init__(FrameCode.CHANNEL_CLOSED, message)
