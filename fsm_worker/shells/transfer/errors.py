"""Re-export: the transfer error vocabulary lives with the pure cores (``fsm_worker.protocol.transfer``)."""

from fsm_worker.protocol.transfer.errors import (
    ChannelClosedError,
    ErrorCode,
    ProtocolError,
    RemoteTransferError,
    TransferError,
)

__all__ = ["ChannelClosedError", "ErrorCode", "ProtocolError", "RemoteTransferError", "TransferError"]
