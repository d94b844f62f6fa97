"""Re-export: the transfer error vocabulary lives with the pure cores (``fsm_worker.protocol.transfer``)."""

from fsm_worker.protocol.transfer.errors import (
    ChannelClosedError,
    FrameCode,
    FrameError,
    RemoteTransferError,
    TransferError,
)

__all__ = ["ChannelClosedError", "FrameCode", "FrameError", "RemoteTransferError", "TransferError"]
