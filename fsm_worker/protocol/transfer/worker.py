"""The worker's side of one data channel: the upload receiver and the results sender behind one ``handle``."""

from __future__ import annotations

from typing import TypeAlias

from fsm_worker.protocol.transfer.frames import FetchResults
from fsm_worker.protocol.transfer.receiver import (
    FrameIn,
    ReceiverEvent,
    ReceiverInstruction,
    UploadReceiver,
)
from fsm_worker.protocol.transfer.sender import (
    ResultHashed,
    ResultsListed,
    ResultsSender,
    ResultStreamed,
    SenderEvent,
    SenderInstruction,
    SendingFailed,
)
from fsm_worker.protocol.transfer.stats import TransferStats
from fsm_worker.protocol.transfer.upload_limits import UploadLimits

WorkerEvent: TypeAlias = ReceiverEvent | SenderEvent
WorkerInstruction: TypeAlias = ReceiverInstruction | SenderInstruction
_SENDER_EVENTS = (ResultsListed, ResultHashed, ResultStreamed, SendingFailed)


class WorkerTransferCore:
    """Routes each event to the receiver (uploads, commit) or the sender (results); one shared ``stats``."""

    def __init__(self, limits: UploadLimits, *, committed: bool = False) -> None:
        self.stats = TransferStats()
        self.receiver = UploadReceiver(limits, committed=committed, stats=self.stats)
        self.sender = ResultsSender(self.stats)

    def handle(self, event: WorkerEvent) -> list[WorkerInstruction]:
        """Feed one event; returns the instructions to carry out in order. Never raises."""
        if isinstance(event, FrameIn) and isinstance(event.frame, FetchResults):
            return list(self.sender.fetch(event.frame))
        if isinstance(event, _SENDER_EVENTS):
            return list(self.sender.handle(event))
        return list(self.receiver.handle(event))

    def validate_state(self) -> None:
        """Invariants of both halves."""
        self.receiver.validate_state()
        self.sender.validate_state()
