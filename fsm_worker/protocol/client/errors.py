"""The typed errors of the client API (pure values: the core fails a job with one, the shell raises it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class JobClientError(Exception):
    """Base of every error the client API raises."""


class NoWorkersError(JobClientError):
    """No worker matched the job's requirements."""


class AllRejectedError(JobClientError):
    """Every asked worker refused; `reasons` maps worker id → (reason, details)."""

    def __init__(self, reasons: Mapping[str, tuple[str, Sequence[str]]]) -> None:
        self.reasons = dict(reasons)
        lines = [
            f"{worker}: {reason}" + (f" ({'; '.join(details)})" if details else "")
            for worker, (reason, details) in sorted(self.reasons.items())
        ]
        super().__init__("every worker rejected the job:\n  " + "\n  ".join(lines))


class ReservationExpiredError(JobClientError):
    """The worker let the reservation go before it was assigned."""


class WorkerGoneError(JobClientError):
    """The worker disappeared from the signaling server while it held the job."""


class JobFailedError(JobClientError):
    """The job failed on the worker."""

    def __init__(self, code: str, message: str, recoverable: bool) -> None:
        super().__init__(f"{code}: {message}" + (" (recoverable)" if recoverable else ""))
        self.code, self.message, self.recoverable = code, message, recoverable


class JobCancelledError(JobClientError):
    """The job was cancelled (by this client) before it completed."""


class WorkerRefusedError(JobClientError):
    """The worker answered with an `app_error`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class ClientTimeoutError(JobClientError, TimeoutError):
    """A wait ran past its timeout."""


class DataChannelError(JobClientError):
    """The data channel could not be opened, or a transfer over it failed (`code` says why)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message
