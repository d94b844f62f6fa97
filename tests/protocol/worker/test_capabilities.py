"""The compatibility check and the duration estimate (pure)."""

from __future__ import annotations

import pytest

from fsm_worker.protocol.messages import JobRequest, Requirements
from fsm_worker.protocol.worker.capabilities import (
    WorkerCapabilities,
    estimate_duration_minutes,
)


def test_incompatibilities_list_every_reason() -> None:
    caps = WorkerCapabilities(4096, "X", "12", ("train-demo",), "h")
    request = JobRequest("j", "render", requirements=Requirements(8192))
    assert caps.incompatibilities(request) == [
        "unsupported job type 'render' (supported: train-demo)",
        "needs 8192 MB of GPU memory, this worker has 4096 MB",
    ]
    assert caps.incompatibilities(JobRequest("j", "train-demo", requirements=Requirements(4096))) == []


@pytest.mark.parametrize(
    ("config", "minutes"),
    [
        ({"epochs": 20}, 1.0),
        ({}, 0.05),
        ({"epochs": "many"}, 0.05),
        ({"epochs": -3}, 0.05),
        ({"epochs": True}, 0.05),
    ],
)
def test_duration_estimate_from_epochs(config: dict[str, object], minutes: float) -> None:
    assert estimate_duration_minutes(config) == minutes
