"""A job type with sleap-nn's ZMQ side channel around the stand-in trainer ``scripts/zmq_trainer.py``."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from fsm_worker.jobs.launch import Command
from fsm_worker.jobs.parsers import JsonLines
from fsm_worker.jobs.registry import JobTypeRegistry
from fsm_worker.jobs.sleap.zmq_channel import SleapZmqChannel, ZmqProgress, free_port
from fsm_worker.jobs.spec import JobSpec

TRAINER = Path(__file__).parents[1] / "jobs" / "scripts" / "zmq_trainer.py"


@attrs.frozen
class ZmqTrainerHandler:
    """Like ``SleapTrainHandler.build``: two fresh ports on each build, handed to the job on its command line."""

    epochs: int
    steps: int
    delay: float

    def validate_config(self, config: Mapping[str, Any]) -> None:
        pass

    def estimate_minutes(self, config: Mapping[str, Any]) -> float:
        return 1.0

    def build(self, spec: JobSpec) -> Command:
        publish, controller = free_port(), free_port()
        argv = (sys.executable, "-u", str(TRAINER), str(publish), str(controller), str(self.epochs),
                str(self.steps), str(self.delay))  # fmt: skip
        channel = SleapZmqChannel(publish, controller, ZmqProgress(self.epochs, self.steps))
        return Command(argv, progress=JsonLines(), side_channel=channel)


def zmq_registry(epochs: int, steps: int, delay: float) -> JobTypeRegistry:
    registry = JobTypeRegistry()
    registry.register("zmq-trainer", ZmqTrainerHandler(epochs, steps, delay))
    return registry
