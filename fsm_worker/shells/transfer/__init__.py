"""File transfer over one ordered, reliable WebRTC data channel (protocol: docs/transfer.md)."""

from fsm_worker.shells.transfer.client import ClientTransferEndpoint, UploadedFile, UploadStatus
from fsm_worker.shells.transfer.download import ProgressFn
from fsm_worker.shells.transfer.errors import (
    ChannelClosedError,
    FrameCode,
    FrameError,
    RemoteTransferError,
    TransferError,
)
from fsm_worker.shells.transfer.flow import DataChannel, TransferTuning
from fsm_worker.shells.transfer.names import check_name
from fsm_worker.shells.transfer.results import DownloadInterrupted, PartialDownload
from fsm_worker.shells.transfer.stats import TransferStats
from fsm_worker.shells.transfer.store import ContentStore
from fsm_worker.shells.transfer.worker import INPUTS_DIR, PARTIAL_DIR, WorkerTransferEndpoint

__all__ = [
    "INPUTS_DIR",
    "PARTIAL_DIR",
    "ChannelClosedError",
    "ClientTransferEndpoint",
    "ContentStore",
    "DataChannel",
    "DownloadInterrupted",
    "FrameCode",
    "FrameError",
    "PartialDownload",
    "ProgressFn",
    "RemoteTransferError",
    "TransferError",
    "TransferStats",
    "TransferTuning",
    "UploadStatus",
    "UploadedFile",
    "WorkerTransferEndpoint",
    "check_name",
]
