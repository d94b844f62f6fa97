"""The value objects nested inside application messages: requirements, metrics, the input manifest, a
job's result and error."""

from __future__ import annotations

import attrs

from fsm_worker.protocol.messages import checks


@attrs.frozen
class Requirements:
    """What a job needs from a worker."""

    min_gpu_memory_mb: int = attrs.field(default=0, validator=checks.non_negative)
    #: Slots asked for together on one worker (issue 12; a CPU slot counts as one); left out on the wire when 1.
    gpus: int = attrs.field(default=1, validator=checks.positive)


@attrs.frozen
class Metrics:
    """Training numbers a job reports (issue 11): all optional; `extra` holds job-type-defined ones."""

    epoch: int | None = None
    step: int | None = None
    loss: float | None = None
    val_loss: float | None = None
    learning_rate: float | None = None
    eta_seconds: float | None = None
    extra: dict[str, float] = attrs.field(factory=dict, validator=checks.metric_extra)


@attrs.frozen
class InputFile:
    """One entry of a job request's input manifest: checked by the job type before any byte moves."""

    name: str = attrs.field(validator=checks.bounded_text)
    size: int = attrs.field(validator=checks.non_negative)


@attrs.frozen
class JobResult:
    training_duration_minutes: float = attrs.field(validator=checks.non_negative)
    model_size_mb: float | None = None


@attrs.frozen
class JobError:
    code: str
    message: str = attrs.field(validator=checks.bounded_text)
    recoverable: bool
