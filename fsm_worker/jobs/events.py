"""Events a run reports to its sink, in order: started, progress*, then exactly one terminal event."""

from __future__ import annotations

from typing import Any

import attrs

from fsm_worker.jobs.metrics import to_metrics
from fsm_worker.jobs.spec import ErrorCode
from fsm_worker.protocol.messages import Metrics


@attrs.frozen
class RunStarted:
    job_id: str
    pid: int


@attrs.frozen
class RunProgress:
    """``progress`` is in the open interval (0, 1) and never decreases within a run."""

    job_id: str
    progress: float
    message: str = ""
    metrics: dict[str, Any] = attrs.field(factory=dict)

    @property
    def wire_metrics(self) -> Metrics | None:
        """The metrics as the wire's typed ``Metrics`` (``job_status.metrics``)."""
        return to_metrics(self.metrics)


@attrs.frozen
class RunSucceeded:
    job_id: str
    training_duration_minutes: float
    model_size_mb: float | None
    output_files: tuple[str, ...] = ()
    metrics: dict[str, Any] = attrs.field(factory=dict)
    stopped_early: bool = False  # a graceful stop ended the run; its outputs are kept

    @property
    def wire_metrics(self) -> Metrics | None:
        """The metrics as the wire's typed ``Metrics`` (``job_complete.metrics``)."""
        return to_metrics(self.metrics)


@attrs.frozen
class RunFailed:
    """``code`` is an ``ErrorCode`` or a job type's own code (``[A-Z][A-Z0-9_]*``)."""

    job_id: str
    code: ErrorCode | str
    message: str
    recoverable: bool


@attrs.frozen
class RunStopped:
    """The run was stopped on request and every process of its group is gone."""

    job_id: str


RunEvent = RunStarted | RunProgress | RunSucceeded | RunFailed | RunStopped
TerminalEvent = RunSucceeded | RunFailed | RunStopped
TERMINAL_EVENTS = (RunSucceeded, RunFailed, RunStopped)
