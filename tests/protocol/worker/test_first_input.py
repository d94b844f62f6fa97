"""The first-input deadline: an assigned job whose client never sends a byte frees the worker soon."""

from __future__ import annotations

import attrs

from fsm_worker.protocol.worker.coordinator import JobCoordinator
from fsm_worker.protocol.worker.events import InputsStarted, TimerFired
from fsm_worker.protocol.worker.instructions import Advertise, CleanupJob
from fsm_worker.protocol.worker.states import WorkerStatus

from .conftest import CAPS, CONFIG, Driver, others, sent

FIRST = 60.0


def _driver() -> Driver:
    driver = Driver()
    driver.core = JobCoordinator(CAPS, attrs.evolve(CONFIG, first_input_timeout=FIRST))
    driver.request()
    driver.assign()
    return driver


def test_no_input_bytes_fail_the_job_with_first_input_timeout() -> None:
    driver = _driver()
    assert driver.core.next_deadline() == FIRST
    assert driver.feed(TimerFired(), at=FIRST - 1) == []
    out = driver.feed(TimerFired(), at=FIRST)
    ((_, failed),) = sent(out)
    assert failed["error"]["code"] == "FIRST_INPUT_TIMEOUT" and failed["error"]["recoverable"] is True
    assert "first_input_timeout" in failed["error"]["message"]
    assert others(out) == [Advertise(WorkerStatus.AVAILABLE, None), CleanupJob("job-1", reclaim=True)]
    assert driver.core.status is WorkerStatus.AVAILABLE


def test_started_inputs_end_the_first_input_deadline() -> None:
    driver = _driver()
    assert driver.feed(InputsStarted("job-1"), at=1.0) == []
    assert driver.core.next_deadline() == CONFIG.input_timeout
    assert driver.feed(TimerFired(), at=FIRST) == []
    ((_, failed),) = sent(driver.feed(TimerFired(), at=CONFIG.input_timeout))
    assert failed["error"]["code"] == "INPUT_TIMEOUT"


def test_inputs_started_for_another_job_changes_nothing() -> None:
    driver = _driver()
    assert driver.feed(InputsStarted("job-other"), at=1.0) == []
    assert driver.core.next_deadline() == FIRST
