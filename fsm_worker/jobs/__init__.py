"""Job execution: worker-configured job types, the kit to write them, a supervised subprocess runner."""

from fsm_worker.jobs.parsers import AnyOf, JsonLines, OutputParser, TqdmBar
from fsm_worker.jobs.plugins import ENTRY_POINT_GROUP, add_entry_point_job_types, add_job_types_from
from fsm_worker.jobs.progress import RateLimiter
from fsm_worker.jobs.registry import (
    Command,
    JobHandler,
    JobTypeRegistry,
    Launch,
    PythonCall,
    SideChannel,
    StaticCommandHandler,
    default_registry,
)
from fsm_worker.jobs.schema import (
    boolean,
    choice,
    describe_schema,
    integer,
    name,
    number,
    parse_config,
    string,
)
from fsm_worker.jobs.spec import (
    ErrorCode,
    JobConfigError,
    JobInputError,
    JobInputInvalid,
    JobSpec,
    JobTypeError,
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
from fsm_worker.protocol.worker.metrics import wire_metrics
from fsm_worker.shells.runner.run import EventSink
from fsm_worker.shells.runner.runner import JobAlreadyRunning, JobRunner

__all__ = [
    "ENTRY_POINT_GROUP",
    "TERMINAL_EVENTS",
    "AnyOf",
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
    "JobTypeError",
    "JobTypeRegistry",
    "JsonLines",
    "Launch",
    "OutputParser",
    "PythonCall",
    "RateLimiter",
    "RunEvent",
    "RunFailed",
    "RunProgress",
    "RunStarted",
    "RunStopped",
    "RunSucceeded",
    "SideChannel",
    "StaticCommandHandler",
    "TerminalEvent",
    "TqdmBar",
    "UnknownJobType",
    "add_entry_point_job_types",
    "add_job_types_from",
    "boolean",
    "choice",
    "default_registry",
    "describe_schema",
    "integer",
    "name",
    "number",
    "parse_config",
    "string",
    "wire_metrics",
]
