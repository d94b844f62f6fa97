"""Error codes and exceptions of the transfer protocol (shared by the cores and the shells)."""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Stable codes carried by ``error`` frames (see docs/transfer.md)."""

    BAD_FRAME = "BAD_FRAME"  # unparsable JSON, unknown type, wrong field type
    UNEXPECTED = "UNEXPECTED"  # valid frame at the wrong time (chunk without a file, ...)
    BAD_NAME = "BAD_NAME"  # not a plain relative file name
    LINK_REFUSED = "LINK_REFUSED"  # target (or the inputs dir) is a symlink or not a regular file
    TOO_LARGE = "TOO_LARGE"  # job upload limit (or the client's download size cap) exceeded
    TOO_MANY_FILES = "TOO_MANY_FILES"  # per-job input file count (or the client's download count cap)
    SIZE_MISMATCH = "SIZE_MISMATCH"  # more or fewer bytes than the header announced
    HASH_MISMATCH = "HASH_MISMATCH"  # sha256 of the received bytes differs from the header
    BUSY = "BUSY"  # an upload or download is still in progress
    COMMITTED = "COMMITTED"  # inputs already committed; no more uploads
    COMMIT_FAILED = "COMMIT_FAILED"  # the host refused or failed the commit
    NOT_READY = "NOT_READY"  # results are not available (yet)
    IO_ERROR = "IO_ERROR"  # the worker could not read/write a file
    INTERNAL = "INTERNAL"  # unexpected worker bug; the endpoint keeps running
    EXISTS = "EXISTS"  # local: the download destination already holds that path
    CHANNEL_CLOSED = "CHANNEL_CLOSED"  # local: the data channel closed mid-operation
    TIMEOUT = "TIMEOUT"  # local: no reply within the timeout


class ProtocolError(ValueError):
    """A frame could not be parsed or validated; the message names the field."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.BAD_FRAME, name: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.name = name


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
        super().__init__(ErrorCode.CHANNEL_CLOSED, message)
