"""Job execution: worker-configured job types, a supervised subprocess runner and the demo job."""

from fsm_worker.jobs.progress import RateLimiter
from fsm_worker.jobs.registry import (
    Command,
    JobHandler,
    JobTypeRegistry,
    Launch,
    PythonCall,
    StaticCommandHandler,
    default_registry,
)
from fsm_worker.jobs.spec import (
    ErrorCode,
    JobConfigError,
    JobInputError,
    JobInputInvalid,
    JobSpec,
    UnknownJobType,
)
from fsm_worker.protocol.worker.events import (
    TERMINAL_EVENTS,
    RunEvent,
    RunFailed,
    RunProgress,
    RunStarted,
    RunStopped,
    RunSucceeded,
    TerminalEvent,
)
from fsm_worker.shells.runner.runner import EventSink, JobAlreadyRunning, JobRunner

__all__ = [
    "TERMINAL_EVENTS",
    "Command",
    "ErrorCode",
    "EventSink",
    "JobAlreadyRunning",
    "JobConfigError",
    "JobHandler",
    "JobInputError",
    "JobInputInvalid",
    "JobRunner",
    "JobSpec",
    "JobTypeRegistry",
    "Launch",
    "PythonCall",
    "RateLimiter",
    "RunEvent",
    "RunFailed",
    "RunProgress",
    "RunStarted",
    "RunStopped",
    "RunSucceeded",
    "StaticCommandHandler",
    "TerminalEvent",
    "UnknownJobType",
    "default_registry",
]
