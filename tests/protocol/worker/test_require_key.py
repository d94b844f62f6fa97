"""`require_job_key`: a worker that requires a per-job key refuses a keyless `job_request`, naming the setting."""

from __future__ import annotations

import hashlib

import attrs

from fsm_worker.protocol.worker.coordinator import JobCoordinator
from fsm_worker.protocol.worker.events import WorkerStatus

from .conftest import CAPS, CONFIG, Driver, sent

KEY_SHA256 = hashlib.sha256(b"k" * 43).hexdigest()


def strict_driver() -> Driver:
    driver = Driver()
    driver.core = JobCoordinator(CAPS, attrs.evolve(CONFIG, require_job_key=True))
    return driver


def test_a_keyless_request_is_refused_naming_the_setting_and_changes_nothing() -> None:
    driver = strict_driver()
    before = driver.core.view()
    out = driver.request()
    assert sent(out) == [
        (
            "client",
            {
                "app_message_type": "job_response",
                "job_id": "job-1",
                "accepted": False,
                "reason": "incompatible",
                "details": [
                    "job_key_sha256 is missing: this worker requires a per-job key (require_job_key)"
                ],
            },
        )
    ]
    assert driver.core.status is WorkerStatus.AVAILABLE and driver.core.view() == before
    queued = driver.request(job_id="job-2", queue=True)  # a queue entry needs the key too
    assert [p["accepted"] for _, p in sent(queued)] == [False]
    out = driver.request(job_id="job-3", job_key_sha256=KEY_SHA256)  # a keyed request is accepted
    assert [p["accepted"] for _, p in sent(out)] == [True]
    assert driver.core.status is WorkerStatus.RESERVED


def test_by_default_a_keyless_request_is_still_accepted() -> None:
    driver = Driver()
    assert not driver.core.config.require_job_key
    assert [p["accepted"] for _, p in sent(driver.request())] == [True]
