"""Job specification, stable error codes and the typed errors handlers raise."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs


class ErrorCode(enum.StrEnum):
    """Stable failure codes reported in ``job_failed``."""

    EXIT_NONZERO = "EXIT_NONZERO"
    KILLED = "KILLED"
    LOST = "LOST"  # a detached job the worker could not find again (no live process, no exit status)
    TIMEOUT = "TIMEOUT"
    HANDLER_ERROR = "HANDLER_ERROR"
    INPUT_INVALID = "INPUT_INVALID"


def _copy_config(value: Any) -> Any:
    """Copy a mapping; leave anything else for the handler to refuse as ``INPUT_INVALID``."""
    return dict(value) if isinstance(value, Mapping) else value


def _absolute(value: str | Path) -> Path:
    """Absolute: the job runs with its cwd in ``workdir``, so a relative path would point elsewhere."""
    return Path(value).absolute()


@attrs.frozen
class JobSpec:
    """One job to run: ``workdir/inputs`` holds the uploads, the job writes ``workdir/outputs``."""

    job_id: str
    job_type: str
    config: Mapping[str, Any] = attrs.field(converter=_copy_config)
    workdir: Path = attrs.field(converter=_absolute)
    #: The GPUs of the job's slot(s) (issue 12), set as the job's ``CUDA_VISIBLE_DEVICES``; None: not set.
    cuda_visible_devices: str | None = None

    @property
    def inputs_dir(self) -> Path:
        return self.workdir / "inputs"

    @property
    def outputs_dir(self) -> Path:
        return self.workdir / "outputs"


class JobTypeError(Exception):
    """A job type's own failure (from ``build``): ``code`` and ``recoverable`` pass through to ``job_failed``."""

    def __init__(self, code: str, message: str, *, recoverable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.recoverable = recoverable


class JobInputInvalid(Exception):
    """Base of the client-caused errors: reported as ``INPUT_INVALID``, never recoverable."""

    code = ErrorCode.INPUT_INVALID


class JobConfigError(JobInputInvalid):
    """A config value is missing, unknown or out of range; ``field`` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"config field {field!r}: {reason}")
        self.field = field
        self.reason = reason


class UnknownJobType(JobConfigError):
    """The requested job type is not configured on this worker."""

    def __init__(self, job_type: str) -> None:
        super().__init__("job_type", f"unknown job type {job_type!r}")
        self.job_type = job_type


class JobInputError(JobInputInvalid):
    """An input file is missing, ambiguous or unreadable; ``name`` names it (or ``None``)."""

    def __init__(self, name: str | None, reason: str) -> None:
        super().__init__(f"input {name!r}: {reason}" if name else f"inputs: {reason}")
        self.name = name
        self.reason = reason
