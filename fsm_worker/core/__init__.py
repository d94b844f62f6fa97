"""The sans-IO core: typed messages, capabilities and the job coordinator state machine."""

from fsm_worker.core.capabilities import WorkerCapabilities, detect_capabilities, estimate_duration_minutes
from fsm_worker.core.coordinator import TRANSITIONS, CoordinatorConfig, JobCoordinator
from fsm_worker.core.events import WorkerStatus
from fsm_worker.core.messages import ProtocolError, parse_message, to_wire

__all__ = [
    "TRANSITIONS",
    "CoordinatorConfig",
    "JobCoordinator",
    "ProtocolError",
    "WorkerCapabilities",
    "WorkerStatus",
    "detect_capabilities",
    "estimate_duration_minutes",
    "parse_message",
    "to_wire",
]
