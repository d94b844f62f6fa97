"""The client side: the `JobClient` API that finds workers, submits jobs and fetches results."""

from fsm_worker.client.api import (
    AllRejectedError,
    ClientTimeoutError,
    ClientTimeouts,
    DataChannelError,
    Job,
    JobCancelledError,
    JobClient,
    JobClientError,
    JobFailedError,
    JobOutcome,
    NoWorkersError,
    ReservationExpiredError,
    WorkerGoneError,
    WorkerInfo,
    WorkerRefusedError,
)
from fsm_worker.protocol.client import Outcome

__all__ = [
    "AllRejectedError",
    "ClientTimeoutError",
    "ClientTimeouts",
    "DataChannelError",
    "Job",
    "JobCancelledError",
    "JobClient",
    "JobClientError",
    "JobFailedError",
    "JobOutcome",
    "NoWorkersError",
    "Outcome",
    "ReservationExpiredError",
    "WorkerGoneError",
    "WorkerInfo",
    "WorkerRefusedError",
]
