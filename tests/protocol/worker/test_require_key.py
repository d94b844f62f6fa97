"""`require_job_key` (default true): a keyless `job_request` is refused, naming the setting and how to fix it."""

from __future__ import annotations

import hashlib

import attrs

from fsm_worker.protocol.worker.coordinator import CoordinatorConfig, JobCoordinator
from fsm_worker.protocol.worker.states import WorkerStatus

from .conftest import CAPS, CONFIG, Driver, sent

KEY_SHA256 = hashlib.sha256(b"k" * 43).hexdigest()


def strict_driver() -> Driver:
    """A core with the default `require_job_key` (the shared CONFIG turns it off for keyless core tests)."""
    driver = Driver()
    default = CoordinatorConfig().require_job_key
    driver.core = JobCoordinator(CAPS, attrs.evolve(CONFIG, require_job_key=default))
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
                    "job_key_sha256 is missing: this worker requires a per-job key (require_job_key); send "
                    "job_key_sha256 (sha256 hex of the job's key), or its owner sets require_job_key = false"
                ],
            },
        )
    ]
    assert driver.core.status is WorkerStatus.AVAILABLE and driver.core.view() == before
    queued = driver.request(job_id="job-2", queue=True)  # a queue entry needs the key too
    assert [p["accepted"] for _, p in sent(queued)] == [False]
    out = driver.request(job_id="job-3", job_key_sha256=KEY_SHA256)  # a keyed request is accepted
    assert [p["accepted"] for _, p in sent(out)] == [True]
    assert driver.core.status is WorkerStatus.RESERVED  # type: ignore[comparison-overlap]  # narrowed above


def test_a_key_is_required_by_default() -> None:
    assert CoordinatorConfig().require_job_key is True
    assert strict_driver().core.config.require_job_key is True


def test_the_owner_can_turn_the_requirement_off_then_a_keyless_job_is_bound_to_the_peer_id() -> None:
    driver = Driver()  # CONFIG: require_job_key=False
    assert not driver.core.config.require_job_key
    assert [p["accepted"] for _, p in sent(driver.request())] == [True]
