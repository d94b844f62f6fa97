"""Carries out the channel-retry core (`protocol/client/channel_retry.py`) for one transfer of a job.

Every `if` here is about IO: each outcome of opening a channel or of the transfer goes to the core as an
event, and the core's instructions are carried out in order until it says `Finish` or `Fail`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from fsm_worker.protocol.client import channel_retry as retry
from fsm_worker.protocol.client.errors import DataChannelError
from fsm_worker.shells.transfer.client import ClientTransferEndpoint
from fsm_worker.shells.transfer.errors import ChannelClosedError, RemoteTransferError, TransferError

__all__ = ["over_channels"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class ChannelOwner(Protocol):
    """What the transfer needs of its job: its id, and its data channel opened, closed and looked at."""

    @property
    def job_id(self) -> str: ...

    async def open_channel(self) -> None: ...

    async def close_channel(self) -> None: ...

    def open_transfer(self) -> ClientTransferEndpoint | None: ...


def _outcome(error: TransferError) -> retry.RetryEvent:
    if isinstance(error, ChannelClosedError):
        return retry.ChannelDropped(error.code, error.message)
    if isinstance(error, RemoteTransferError):
        return retry.TransferRefused(error.code, error.message)
    return retry.TransferFailed(error.code, error.message)


async def over_channels(
    job: ChannelOwner,
    what: retry.Operation,
    retries: int,
    operation: Callable[[ClientTransferEndpoint], Awaitable[T]],
) -> T | None:
    """Run `operation` over the job's data channel; when it drops, over a new one (the transfer resumes where
    the worker's verified bytes end), until it is done or `retries` new channels were spent. Returns what
    the operation returned (None when an upload's commit had gone through before a drop); raises
    `DataChannelError` when the core says `Fail`, and whatever opening a channel raises."""
    core = retry.ChannelRetry(what, retries)
    last_error: TransferError | None = None
    result: T | None = None
    pending = core.handle(retry.Begin(job.open_transfer() is not None))
    while pending:
        instruction, *pending = pending
        match instruction:
            case retry.OpenChannel():
                await job.open_channel()
                pending += core.handle(retry.ChannelOpened())
            case retry.CloseChannel(attempt=attempt):
                log.warning("job %s: data channel dropped during the %s (attempt %d); going on over a new one",
                            job.job_id, what, attempt)  # fmt: skip
                await job.close_channel()
            case retry.RunTransfer():
                transfer = job.open_transfer()
                try:
                    if transfer is None:  # the channel closed between its opening and this attempt
                        raise ChannelClosedError("data channel closed before the transfer began")
                    result = await operation(transfer)
                    event: retry.RetryEvent = retry.TransferSucceeded()
                except TransferError as error:
                    event, last_error = _outcome(error), error
                pending += core.handle(event)
            case retry.Finish():
                return result
            case retry.Fail(code=code, message=message):
                raise DataChannelError(code, message) from last_error
    raise AssertionError(f"the channel retry core stopped in {core.state}")
