"""The room-wide hold cap in the worker's core (issue 10 item 8): claim before answering, release on every end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from fsm_worker.protocol.worker.coordinator import JobCoordinator
from fsm_worker.protocol.worker.events import (
    Drain,
    HoldGranted,
    HoldRefused,
    HoldsOffered,
    HoldUnanswered,
    InputsReady,
    Restored,
    RunFailed,
    RunStarted,
    RunSucceeded,
    TimerFired,
)
from fsm_worker.protocol.worker.hold_events import ClaimHold, ReleaseHold, SyncHolds, hold_ref
from fsm_worker.protocol.worker.holds import hold_instructions
from fsm_worker.protocol.worker.instructions import Instruction
from fsm_worker.protocol.worker.states import WorkerState, WorkerStatus

from .conftest import CAPS, CONFIG, Driver, sent

CAP_TEXT = "the client holds max_holds_per_client (2) jobs in the room"


@pytest.fixture
def holds() -> Driver:
    driver = Driver()
    driver.core = JobCoordinator(CAPS, attrs.evolve(CONFIG, first_input_timeout=60.0))
    assert driver.feed(HoldsOffered(True)) == [SyncHolds(())]
    return driver


def _claimed(driver: Driver, **extra: Any) -> None:
    out = driver.request(**extra)
    assert out == [ClaimHold("client", "job-1")], "nothing is answered or reserved before the hold"
    assert driver.core.job_state("job-1") is WorkerState.AVAILABLE


def _held(driver: Driver) -> None:
    _claimed(driver)
    out = driver.feed(HoldGranted("job-1"))
    ((to, response),) = sent(out)
    assert (to, response["accepted"]) == ("client", True)
    assert driver.core.job_state("job-1") is WorkerState.RESERVED


def _released(out: list[Instruction]) -> list[Instruction]:
    return [i for i in hold_instructions(out) if isinstance(i, ReleaseHold)]


def test_granted_claim_reserves_and_answers_accepted(holds: Driver) -> None:
    _held(holds)
    assert holds.core.status is WorkerStatus.RESERVED


def test_refused_claim_answers_room_cap_and_reserves_nothing(holds: Driver) -> None:
    _claimed(holds)
    out = holds.feed(HoldRefused("job-1", CAP_TEXT))
    ((to, response),) = sent(out)
    assert to == "client" and response["accepted"] is False and response["reason"] == "room_cap"
    assert response["details"] == [CAP_TEXT]
    assert hold_instructions(out) == []  # a refused hold was never counted: nothing to release
    assert holds.core.status is WorkerStatus.AVAILABLE and holds.core.at_rest()
    # the worker is still available: another client's request claims and gets it
    assert holds.request("bob", job_id="job-2") == [ClaimHold("bob", "job-2")]


def test_degraded_grant_takes_the_job(holds: Driver) -> None:
    _claimed(holds)
    ((_, response),) = sent(holds.feed(HoldUnanswered("job-1", "no ack")))
    assert response["accepted"] is True


def test_without_holds_offered_a_request_is_answered_at_once() -> None:
    driver = Driver()
    ((_, response),) = sent(driver.request())
    assert response["accepted"] is True
    assert driver.feed(HoldsOffered(False)) == []
    assert hold_instructions(driver.cancel()) == []  # no hold was claimed: none is released


def test_a_repeated_request_while_claimed_waits_and_another_sender_is_busy(holds: Driver) -> None:
    _claimed(holds)
    assert holds.request() == []
    ((to, response),) = sent(holds.request("mallory"))
    assert (to, response["reason"]) == ("mallory", "busy")
    assert hold_instructions(holds.request("mallory")) == []


def test_an_answer_for_no_pending_claim_is_ignored(holds: Driver) -> None:
    assert holds.feed(HoldGranted("job-9")) == []
    assert holds.feed(HoldRefused("job-9", CAP_TEXT)) == []
    _held(holds)
    assert holds.feed(HoldGranted("job-1")) == []  # a duplicate answer: the job is held once
    assert holds.core.job_state("job-1") is WorkerState.RESERVED


def test_slot_taken_while_claimed_answers_busy_and_releases(holds: Driver) -> None:
    _claimed(holds)
    assert holds.request("bob", job_id="job-2") == [ClaimHold("bob", "job-2")]
    holds.feed(HoldGranted("job-2"))
    out = holds.feed(HoldGranted("job-1"))
    ((_, response),) = sent(out)
    assert response["reason"] == "busy"
    assert _released(out) == [ReleaseHold("client", "job-1")]


def test_queued_request_claims_then_queues(holds: Driver) -> None:
    holds.request("bob", job_id="job-0")
    holds.feed(HoldGranted("job-0"))
    _claimed(holds, queue=True)
    ((_, response),) = sent(holds.feed(HoldGranted("job-1")))
    assert response["accepted"] is True and response["queued"] is True
    assert holds.core.job_state("job-1") is WorkerState.QUEUED


def test_claims_are_bounded_by_what_the_worker_could_take(holds: Driver) -> None:
    room = len(holds.core.sched.slots.slots) + holds.core.sched.queue.capacity
    for n in range(room):
        assert holds.request(f"c{n}", job_id=f"job-{n}", queue=True) == [ClaimHold(f"c{n}", f"job-{n}")]
    ((_, response),) = sent(holds.request("late", job_id="job-late", queue=True))
    assert response["reason"] == "busy"


def _run(d: Driver) -> None:
    d.assign()
    d.feed(InputsReady("job-1"))
    d.feed(RunStarted("job-1"))


def _complete(d: Driver) -> list[Instruction]:
    _run(d)
    return d.feed(RunSucceeded("job-1", 1.0, None))


def _failed(d: Driver) -> list[Instruction]:
    _run(d)
    return d.feed(RunFailed("job-1", "E", "m", False))


def _cancel_running(d: Driver) -> list[Instruction]:
    _run(d)
    d.cancel()
    return d.feed(RunFailed("job-1", "STOPPED", "stopped", False))


def _first_input_timeout(d: Driver) -> list[Instruction]:
    d.assign()
    return d.feed(TimerFired(), at=61.0)


ENDINGS: dict[str, Callable[[Driver], list[Instruction]]] = {
    "lease_expiry": lambda d: d.feed(TimerFired(), at=CONFIG.reservation_timeout),
    "cancel": lambda d: d.cancel(),
    "drain": lambda d: d.feed(Drain()),
    "first_input_timeout": _first_input_timeout,
    "complete": _complete,
    "failed": _failed,
    "cancel_running": _cancel_running,
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_the_hold_is_released_once_on_every_ending(holds: Driver, ending: str) -> None:
    _held(holds)
    out = ENDINGS[ending](holds)
    assert _released(out) == [ReleaseHold("client", "job-1")]
    assert holds.core.job_state("job-1") is WorkerState.AVAILABLE
    assert _released(holds.feed(TimerFired(), at=10_000.0)) == []


def test_a_queued_job_whose_lease_expires_releases_its_hold(holds: Driver) -> None:
    holds.request("bob", job_id="job-0")
    holds.feed(HoldGranted("job-0"))
    holds.assign("bob", "job-0")
    holds.feed(InputsReady("job-0"))
    holds.feed(RunStarted("job-0"))  # job-0 keeps the only slot
    _claimed(holds, queue=True)
    holds.feed(HoldGranted("job-1"))
    out = holds.feed(TimerFired(), at=CONFIG.queue_lease + 1)
    assert holds.core.job_state("job-1") is WorkerState.AVAILABLE
    assert ReleaseHold("client", "job-1") in _released(out)


def test_drain_answers_a_pending_claim_and_releases_it(holds: Driver) -> None:
    _claimed(holds)
    out = holds.feed(Drain())
    ((_, response),) = sent(out)
    assert response["reason"] == "draining"
    assert _released(out) == [ReleaseHold("client", "job-1")]
    assert holds.feed(HoldGranted("job-1")) == []  # its late answer changes nothing


def test_restore_drops_the_old_process_claims_and_reconnect_resyncs(holds: Driver) -> None:
    _held(holds)
    holds.request("bob", job_id="job-2", queue=True)
    out = holds.feed(Restored())
    assert _released(out) == [ReleaseHold("bob", "job-2")]
    assert holds.feed(HoldsOffered(True)) == [SyncHolds((("client", "job-1"),))]


def test_the_job_ref_is_opaque_and_stable() -> None:
    claim = ClaimHold("client", "job-1")
    assert claim.job_ref == ReleaseHold("client", "job-1").job_ref == hold_ref("job-1")
    assert "job-1" not in claim.job_ref and len(claim.job_ref) == 32


def test_a_cancel_while_claimed_drops_the_claim_and_its_late_grant(holds: Driver) -> None:
    """A client that won elsewhere cancels its other bids before they are answered."""
    _claimed(holds)
    out = holds.cancel()
    assert [payload["app_message_type"] for _, payload in sent(out)] == ["job_cancelled"]
    assert _released(out) == [ReleaseHold("client", "job-1")]
    assert holds.feed(HoldGranted("job-1")) == []
    assert holds.core.job_state("job-1") is WorkerState.AVAILABLE and holds.core.at_rest()
