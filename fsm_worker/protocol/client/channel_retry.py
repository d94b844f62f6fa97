"""A client's transfer over data channels that may drop: the retry decision, as a pure core (no IO).

The job shell (`client/job.py`) runs one upload (inputs, then their commit) or one download with it. It reports
what its IO did; the core answers what to do next:

    Begin(channel_open)        -> [RunTransfer]  or  [OpenChannel]
    ChannelOpened              -> [RunTransfer]
    TransferSucceeded          -> [Finish]
    ChannelDropped(code, msg)  -> [CloseChannel, OpenChannel]          while the retry budget lasts
                               -> [Fail(code, "<what> failed N times: msg")]   once it is spent
    TransferRefused(code, msg) -> [Finish]   an upload told COMMITTED: its commit went through before a drop
                               -> [Fail(code, msg)]                    any other refusal of the worker
    TransferFailed(code, msg)  -> [Fail(code, msg)]                    a local failure (bad frame, disk, …)

The budget (`retries`: new channels after the first) is the core's state. An event that does not fit the
state (a second `Begin`, an event after the end) changes nothing and answers `[]`.
"""

from __future__ import annotations

import enum
from typing import Literal

import attrs

from fsm_worker.protocol.errors import FrameCode

__all__ = [
    "Begin",
    "ChannelDropped",
    "ChannelOpened",
    "ChannelRetry",
    "CloseChannel",
    "Fail",
    "Finish",
    "OpenChannel",
    "RetryState",
    "RunTransfer",
    "TransferFailed",
    "TransferRefused",
    "TransferSucceeded",
]

Operation = Literal["upload", "download"]


class RetryState(enum.Enum):
    IDLE = "idle"
    OPENING = "opening"  # waiting for a channel
    TRANSFERRING = "transferring"
    DONE = "done"
    FAILED = "failed"


# --- events (from the shell) ---------------------------------------------------------------------------------


@attrs.frozen
class Begin:
    channel_open: bool  # the job already has an open data channel


@attrs.frozen
class ChannelOpened:
    pass


@attrs.frozen
class TransferSucceeded:
    pass


@attrs.frozen
class ChannelDropped:
    code: str
    message: str


@attrs.frozen
class TransferRefused:
    """The worker answered with an error frame."""

    code: str
    message: str


@attrs.frozen
class TransferFailed:
    """The transfer failed here (not a dropped channel)."""

    code: str
    message: str


RetryEvent = Begin | ChannelOpened | TransferSucceeded | ChannelDropped | TransferRefused | TransferFailed


# --- instructions (to the shell) -----------------------------------------------------------------------------


@attrs.frozen
class OpenChannel:
    pass


@attrs.frozen
class CloseChannel:
    """Close the dropped channel (before opening a new one); `attempt` is the one that dropped (1-based)."""

    attempt: int


@attrs.frozen
class RunTransfer:
    """Run the operation over the open channel (it resumes from what the worker verified)."""

    attempt: int


@attrs.frozen
class Finish:
    pass


@attrs.frozen
class Fail:
    code: str
    message: str


RetryInstruction = OpenChannel | CloseChannel | RunTransfer | Finish | Fail


class ChannelRetry:
    """One operation's attempts; `handle(event)` returns the instructions in order. Never raises."""

    def __init__(self, what: Operation, retries: int) -> None:
        self.what = what
        self.retries = max(0, retries)
        self.state = RetryState.IDLE
        self.attempt = 0  # attempts begun

    def next_deadline(self) -> float | None:
        return None  # every wait of an attempt is bounded by the shell's own setting (channel setup, replies)

    def handle(self, event: RetryEvent) -> list[RetryInstruction]:
        state = self.state
        if state is RetryState.IDLE and isinstance(event, Begin):
            return self._run() if event.channel_open else self._open()
        if state is RetryState.OPENING and isinstance(event, ChannelOpened):
            return self._run()
        if state is not RetryState.TRANSFERRING:
            return []
        match event:
            case TransferSucceeded():
                return self._finish()
            case ChannelDropped(code=code, message=message):
                if self.attempt > self.retries:
                    return self._fail(code, f"{self.what} failed {self.attempt} times: {message}")
                return [CloseChannel(self.attempt), *self._open()]
            case TransferRefused(code=code) if self.what == "upload" and code == FrameCode.COMMITTED:
                return self._finish()
            case TransferRefused(code=code, message=message) | TransferFailed(code=code, message=message):
                return self._fail(code, message)
        return []

    def _open(self) -> list[RetryInstruction]:
        self.state = RetryState.OPENING
        return [OpenChannel()]

    def _run(self) -> list[RetryInstruction]:
        self.state, self.attempt = RetryState.TRANSFERRING, self.attempt + 1
        return [RunTransfer(self.attempt)]

    def _finish(self) -> list[RetryInstruction]:
        self.state = RetryState.DONE
        return [Finish()]

    def _fail(self, code: str, message: str) -> list[RetryInstruction]:
        self.state = RetryState.FAILED
        return [Fail(code, message)]
