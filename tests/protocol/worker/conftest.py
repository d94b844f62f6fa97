"""Shared helpers for the core's tests: a coordinator with known capabilities and wire-level shortcuts."""

from __future__ import annotations

from typing import Any

import pytest
from support.worker_core import CAPS as CAPS
from support.worker_core import CONFIG as CONFIG

from fsm_worker.protocol.messages import to_wire
from fsm_worker.protocol.worker.coordinator import JobCoordinator
from fsm_worker.protocol.worker.events import Event, PeerMessage
from fsm_worker.protocol.worker.instructions import Instruction, Send
from fsm_worker.protocol.worker.states import Job


class Driver:
    """Feeds a coordinator and records what it answers, with wire-level shortcuts."""

    def __init__(self) -> None:
        self.core = JobCoordinator(CAPS, CONFIG)
        self.now = 0.0

    def job(self) -> Job:
        """The focused job (there must be one)."""
        job = self.core.current_job
        assert job is not None, "no current job"
        return job

    def feed(self, event: Event, at: float | None = None) -> list[Instruction]:
        if at is not None:
            self.now = at
        out = self.core.handle(event, self.now)
        self.core.validate_state(self.now)
        return out

    def message(self, sender: str, payload: object, at: float | None = None) -> list[Instruction]:
        return self.feed(PeerMessage(sender, payload), at)

    def request(self, sender: str = "client", job_id: str = "job-1", **extra: Any) -> list[Instruction]:
        payload = {"app_message_type": "job_request", "job_id": job_id, "job_type": "train-demo", **extra}
        return self.message(sender, payload)

    def assign(self, sender: str = "client", job_id: str = "job-1") -> list[Instruction]:
        return self.message(sender, {"app_message_type": "job_assignment", "job_id": job_id})

    def cancel(self, sender: str = "client", job_id: str = "job-1") -> list[Instruction]:
        return self.message(sender, {"app_message_type": "job_cancel", "job_id": job_id})


def sent(instructions: list[Instruction]) -> list[tuple[str, dict[str, Any]]]:
    """The (recipient, wire payload) pairs among `instructions`."""
    return [(item.to, to_wire(item.message)) for item in instructions if isinstance(item, Send)]


def others(instructions: list[Instruction]) -> list[Instruction]:
    """The instructions that are not messages to send."""
    return [item for item in instructions if not isinstance(item, Send)]


@pytest.fixture
def driver() -> Driver:
    return Driver()
