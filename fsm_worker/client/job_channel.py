"""A job's data channel on the client: the RTC offer and answer, the open channel's transfer endpoint, and
closing it (or dropping it at once when the worker restarted). Which messages go out is the core's: the
offer goes to it as `OfferReady`; the answer (or refusal) comes back through the job's control replies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from aiortc import RTCPeerConnection

from fsm_worker.protocol.client.errors import (
    DataChannelError,
    ReservationExpiredError,
    WorkerRefusedError,
)
from fsm_worker.protocol.client.events import ClientTimeouts
from fsm_worker.protocol.messages import AppError, Message, ReservationExpired, RtcAnswer
from fsm_worker.protocol.transfer.download import DownloadLimits
from fsm_worker.shells.rtc import tuning
from fsm_worker.shells.rtc.options import RtcOptions
from fsm_worker.shells.rtc.peer import create_peer_connection
from fsm_worker.shells.rtc.session import RtcSetupError, accept_answer, create_offer, wait_channel_open
from fsm_worker.shells.transfer.client import ClientTransferEndpoint
from fsm_worker.shells.transfer.flow import TransferTuning

log = logging.getLogger(__name__)


class ChannelSignals(Protocol):
    """What setting up a channel needs of its job: its ids, the offer to the core, the worker's reply."""

    @property
    def job_id(self) -> str: ...

    @property
    def worker_id(self) -> str | None: ...

    def offer_ready(self, sdp: str, options: dict[str, object]) -> None: ...

    async def next_control(self, kinds: tuple[type[Message], ...], timeout: float) -> Message: ...


class JobChannel:
    """The job's one data channel at a time (a new one replaces the old)."""

    def __init__(
        self, rtc_options: RtcOptions, timeouts: ClientTimeouts, download_limits: DownloadLimits
    ) -> None:
        self.download_limits = download_limits
        self.rtc_options = rtc_options
        self.timeouts = timeouts
        self.pc: RTCPeerConnection | None = None
        self._transfer: ClientTransferEndpoint | None = None
        self._closing: set[asyncio.Task[None]] = set()  # dropped peer connections being closed

    async def open(self, job: ChannelSignals) -> None:
        """Offer a data channel to the worker and wait until it is open (replacing any earlier one)."""
        try:
            await self._open(job)
        except RtcSetupError as error:
            await self.close()
            raise DataChannelError("RTC_SETUP_FAILED", str(error)) from error

    async def _open(self, job: ChannelSignals) -> None:
        await self.close()
        timeout = self.timeouts.rtc_setup
        self.pc = pc = create_peer_connection(self.rtc_options)
        channel, offer = await create_offer(pc, timeout=timeout)
        job.offer_ready(offer, tuning.capability_options(self.rtc_options))
        reply = await job.next_control((RtcAnswer, AppError, ReservationExpired), timeout)
        if isinstance(reply, ReservationExpired):
            raise ReservationExpiredError(
                f"worker {job.worker_id} released job {job.job_id} before it was assigned"
            )
        if isinstance(reply, AppError):
            raise WorkerRefusedError(reply.code, reply.message)
        assert isinstance(reply, RtcAnswer)
        profile = tuning.negotiate(self.rtc_options, reply.options.get(tuning.CAPABILITY_KEY))
        tuning.apply_fast_path(pc, profile)  # before the answer: the worker may send large records at once
        await accept_answer(pc, reply.sdp, timeout=timeout)
        await wait_channel_open(pc, channel, timeout=timeout)
        window = tuning.transfer_window(profile)
        self._transfer = ClientTransferEndpoint(
            channel,
            tuning=TransferTuning(**window),
            reply_timeout=self.timeouts.transfer_reply,
            download_limits=self.download_limits,
        )

    def open_transfer(self) -> ClientTransferEndpoint | None:
        """The transfer endpoint of the data channel while that channel is open."""
        if self._transfer is not None and self._transfer.channel.readyState == "open":
            return self._transfer
        return None

    def drop(self, job_id: str, worker_id: str | None) -> None:
        """The worker restarted: its end of the data channel is gone though ours looks open (SCTP has not
        noticed). A transfer waiting on it fails at once with `ChannelClosedError` and goes on over a new one."""
        if (
            self._transfer is None
        ):  # no channel, or one being set up now: the worker sent this before its answer
            return
        log.info("job %s: worker %s restarted; dropping the data channel", job_id, worker_id)
        self._transfer.close()
        self._transfer = None
        if self.pc is not None:
            pc, self.pc = self.pc, None
            task = asyncio.get_running_loop().create_task(pc.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        if self._transfer is not None:
            self._transfer.close()
            self._transfer = None
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()
            self.pc = None
