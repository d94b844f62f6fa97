"""One test per scenario of the worker-peer-messaging spec (named after it), plus what a serious worker adds.

Each test asserts the exact messages sent, the other instructions, and the resulting state.
"""

from __future__ import annotations

import hashlib
import logging

import pytest

from fsm_worker.protocol.worker.events import (
    ChannelAnswered,
    ChannelFailed,
    ChannelOpened,
    Drain,
    InputsReady,
    PeerMessage,
    Restored,
    RunFailed,
    RunProgress,
    RunStarted,
    RunStopped,
    RunSucceeded,
    TimerFired,
)
from fsm_worker.protocol.worker.instructions import (
    AcceptOffer,
    AdoptRun,
    Advertise,
    CleanupJob,
    CloseChannel,
    Instruction,
    PublishResults,
    Send,
    StartRun,
    StopRun,
)
from fsm_worker.protocol.worker.states import WorkerState, WorkerStatus

from .conftest import Driver, others, sent

AVAILABLE, RESERVED, BUSY = WorkerStatus.AVAILABLE, WorkerStatus.RESERVED, WorkerStatus.BUSY


def accepted(job_id: str = "job-1", minutes: float = 0.5) -> dict[str, object]:
    return {
        "app_message_type": "job_response",
        "job_id": job_id,
        "accepted": True,
        "estimated_duration_minutes": minutes,
    }


def running(driver: Driver, job_id: str = "job-1") -> None:
    """Bring the driver's worker to a started run of `job_id` for "client"."""
    driver.request(job_id=job_id, config={"epochs": 10})
    driver.assign(job_id=job_id)
    driver.feed(InputsReady(job_id))
    driver.feed(RunStarted(job_id))


# --- Requirement: Peer Message Sending / Job Request Handling ----------------------------------------------


def test_send_job_response_to_client(driver: Driver) -> None:
    out = driver.request("client-7", config={"epochs": 10})
    assert sent(out) == [("client-7", accepted(minutes=0.5))]


def test_accept_compatible_job_when_available(driver: Driver) -> None:
    out = driver.request(config={"epochs": 4}, requirements={"min_gpu_memory_mb": 4096})
    assert sent(out) == [("client", accepted(minutes=0.2))]
    assert others(out) == [Advertise(RESERVED, "job-1")]
    assert driver.core.status is RESERVED
    assert driver.core.pending_job_id == "job-1"
    assert driver.core.next_deadline() == 30.0


def test_reject_job_when_busy(driver: Driver) -> None:
    running(driver)
    out = driver.request("other", job_id="job-2")
    assert sent(out) == [
        (
            "other",
            {"app_message_type": "job_response", "job_id": "job-2", "accepted": False, "reason": "busy"},
        )
    ]
    assert others(out) == []
    assert driver.core.status is BUSY and driver.core.current_job is not None
    assert driver.core.current_job.job_id == "job-1"


def test_reject_job_when_reserved_for_another(driver: Driver) -> None:
    driver.request()
    out = driver.request("other", job_id="job-2")
    assert sent(out)[0][1]["reason"] == "busy"
    assert driver.core.status is RESERVED and driver.core.pending_job_id == "job-1"


def test_reject_incompatible_job(driver: Driver, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        out = driver.request(requirements={"min_gpu_memory_mb": 16384})
    reply = {
        "app_message_type": "job_response",
        "job_id": "job-1",
        "accepted": False,
        "reason": "incompatible",
        "details": ["needs 16384 MB of GPU memory, this worker has 8192 MB"],
    }
    assert sent(out) == [("client", reply)]
    assert driver.core.status is AVAILABLE
    assert "needs 16384 MB of GPU memory" in caplog.text


def test_reject_unsupported_job_type(driver: Driver) -> None:
    out = driver.message("client", {"app_message_type": "job_request", "job_id": "j", "job_type": "render"})
    ((_, reply),) = sent(out)
    assert reply["reason"] == "incompatible"
    assert reply["details"] == ["unsupported job type 'render' (supported: train-demo)"]


def test_busy_is_checked_before_compatibility(driver: Driver) -> None:
    driver.request()
    out = driver.request("other", job_id="job-2", requirements={"min_gpu_memory_mb": 99999})
    assert sent(out)[0][1]["reason"] == "busy"


# --- Requirement: Job Assignment Handling --------------------------------------------------------------------


def test_store_job_assignment_details(driver: Driver, caplog: pytest.LogCaptureFixture) -> None:
    driver.request()
    driver.now = 5.0
    with caplog.at_level(logging.INFO):
        out = driver.assign()
    assert sent(out) == []
    assert others(out) == [Advertise(BUSY, "job-1")]
    job = driver.core.current_job
    assert job is not None
    assert (job.job_id, job.client_id, job.assigned_at) == ("job-1", "client", 5.0)
    assert driver.core.status is BUSY and driver.core.reservation is None
    assert "Job assigned and ready for WebRTC connection" in caplog.text


def test_client_initiates_rtc_connection(driver: Driver) -> None:
    driver.request()
    driver.assign()
    assert driver.core.state is WorkerState.AWAITING_INPUTS
    out = driver.message("client", {"app_message_type": "rtc_offer", "job_id": "job-1", "sdp": "v=0"})
    assert out == [AcceptOffer("job-1", "client", "v=0", {})]


# --- Requirement: Job Cancellation Handling ------------------------------------------------------------------


def test_cancel_active_job(driver: Driver) -> None:
    driver.request()
    driver.assign()
    out = driver.cancel()
    ack = {
        "app_message_type": "job_cancelled",
        "status": "cancelled",
        "cleanup_complete": True,
        "job_id": "job-1",
        "seq": 1,
    }
    assert sent(out) == [("client", ack)]
    assert others(out) == [Advertise(AVAILABLE, None), CleanupJob("job-1", reclaim=True)]
    assert driver.core.current_job is None and driver.core.status is AVAILABLE


def test_cancel_running_job_stops_the_run_first(driver: Driver) -> None:
    running(driver)
    out = driver.cancel()
    assert out == [StopRun("job-1")]
    assert driver.core.status is BUSY
    out = driver.feed(RunStopped("job-1"))
    assert [payload["app_message_type"] for _, payload in sent(out)] == ["job_cancelled"]
    assert others(out) == [Advertise(AVAILABLE, None), CleanupJob("job-1", reclaim=True)]


def test_cancel_races_with_completion_acknowledges_the_cancel(driver: Driver) -> None:
    running(driver)
    driver.cancel()
    out = driver.feed(RunSucceeded("job-1", 1.0, 2.0))
    assert [payload["app_message_type"] for _, payload in sent(out)] == ["job_cancelled"]
    assert driver.feed(RunStopped("job-1")) == []  # the late confirmation is stale


def test_cancel_non_existent_job(driver: Driver, caplog: pytest.LogCaptureFixture) -> None:
    running(driver)
    with caplog.at_level(logging.WARNING):
        out = driver.cancel(job_id="job-404")
    assert out == []
    assert driver.core.status is BUSY
    assert "job_cancel for job-404" in caplog.text


def test_cancel_from_a_stranger_is_ignored(driver: Driver) -> None:
    running(driver)
    assert driver.cancel(sender="mallory") == []
    assert driver.core.status is BUSY


def test_cancel_of_a_reservation(driver: Driver) -> None:
    driver.request()
    out = driver.cancel()
    ack = {
        "app_message_type": "job_cancelled",
        "status": "cancelled",
        "cleanup_complete": True,
        "job_id": "job-1",
    }
    assert sent(out) == [("client", ack)]
    assert others(out) == [Advertise(AVAILABLE, None)]
    assert driver.core.status is AVAILABLE


# --- Requirement: Peer Message Routing -----------------------------------------------------------------------


def test_route_job_request_message(driver: Driver) -> None:
    out = driver.request("peer-a")
    assert sent(out)[0][0] == "peer-a" and driver.core.reservation is not None
    assert driver.core.reservation.client_id == "peer-a"


def test_route_job_assignment_message(driver: Driver) -> None:
    driver.request("peer-a")
    driver.assign("peer-a")
    assert driver.core.status is BUSY


def test_route_job_cancel_message(driver: Driver) -> None:
    driver.request("peer-a")
    driver.cancel("peer-a")
    assert driver.core.status is AVAILABLE


def test_unhandled_peer_message_type(driver: Driver, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        out = driver.message("peer-a", {"app_message_type": "make_coffee"})
    assert out == []
    assert "make_coffee" in caplog.text


def test_worker_bound_type_sent_to_worker_is_ignored(
    driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        out = driver.message("peer-a", {"app_message_type": "reservation_expired", "job_id": "x"})
    assert out == [] and "not for a worker" in caplog.text


# --- Requirement: Job Status Updates -------------------------------------------------------------------------


def test_send_job_starting_status(driver: Driver) -> None:
    driver.request()
    driver.assign()
    out = driver.feed(InputsReady("job-1"))
    assert len(out) == 1 and isinstance(out[0], StartRun) and out[0].job.job_id == "job-1"
    out = driver.feed(RunStarted("job-1"))
    status = {
        "app_message_type": "job_status",
        "job_id": "job-1",
        "status": "starting",
        "progress": 0.0,
        "message": "starting train-demo",
        "seq": 1,
    }
    assert sent(out) == [("client", status)]


def test_send_running_progress(driver: Driver) -> None:
    running(driver)
    out = driver.feed(RunProgress("job-1", 0.25, "epoch 5/20"))
    status = {
        "app_message_type": "job_status",
        "job_id": "job-1",
        "status": "running",
        "progress": 0.25,
        "message": "epoch 5/20",
        "seq": 2,
    }
    assert sent(out) == [("client", status)]


def test_send_job_completion_status(driver: Driver) -> None:
    running(driver)
    out = driver.feed(RunSucceeded("job-1", 1.5, 0.01))
    complete = {
        "app_message_type": "job_complete",
        "status": "completed",
        "progress": 1.0,
        "job_id": "job-1",
        "result": {"training_duration_minutes": 1.5, "model_size_mb": 0.01},
        "seq": 2,
    }
    assert sent(out) == [("client", complete)]
    assert others(out) == [Advertise(AVAILABLE, None), PublishResults("job-1")]
    assert driver.core.retained_job_ids() == ["job-1"]


def test_send_job_failure_status(driver: Driver) -> None:
    running(driver)
    out = driver.feed(RunFailed("job-1", "EXIT_NONZERO", "exit 3: boom", False))
    failed = {
        "app_message_type": "job_failed",
        "status": "failed",
        "job_id": "job-1",
        "error": {"code": "EXIT_NONZERO", "message": "exit 3: boom", "recoverable": False},
        "seq": 2,
    }
    assert sent(out) == [("client", failed)]
    assert driver.core.status is AVAILABLE


def test_stale_run_events_are_ignored(driver: Driver) -> None:
    running(driver)
    for event in (
        RunStarted("old"),
        RunProgress("old", 0.5, "x"),
        RunSucceeded("old", 1, None),
        RunFailed("old", "X", "y", False),
        RunStopped("old"),
        InputsReady("old"),
    ):
        assert driver.feed(event) == []
    assert driver.core.status is BUSY


# --- Beyond the seed: leases, ownership, idempotency, malformed input ----------------------------------------


def test_reservation_lease_expires(driver: Driver) -> None:
    driver.request()
    assert driver.feed(TimerFired(), at=29.9) == []
    out = driver.feed(TimerFired(), at=30.0)
    assert sent(out) == [("client", {"app_message_type": "reservation_expired", "job_id": "job-1"})]
    assert others(out) == [Advertise(AVAILABLE, None)]


def test_late_assignment_after_lease_is_refused(driver: Driver) -> None:
    driver.request()
    out = driver.message("client", {"app_message_type": "job_assignment", "job_id": "job-1"}, at=31.0)
    kinds = [payload["app_message_type"] for _, payload in sent(out)]
    assert kinds == ["reservation_expired", "app_error"]
    assert sent(out)[1][1]["code"] == "INVALID_ASSIGNMENT"
    assert driver.core.status is AVAILABLE


@pytest.mark.parametrize(("sender", "job_id"), [("mallory", "job-1"), ("client", "job-2")])
def test_assignment_must_match_the_reservation(driver: Driver, sender: str, job_id: str) -> None:
    driver.request()
    out = driver.assign(sender, job_id)
    error = {
        "app_message_type": "app_error",
        "code": "INVALID_ASSIGNMENT",
        "message": "no reservation for this job is held for you",
        "job_id": job_id,
    }
    assert sent(out) == [(sender, error)]
    assert driver.core.status is RESERVED and driver.core.pending_job_id == "job-1"


def test_duplicate_request_while_reserved_repeats_the_acceptance(driver: Driver) -> None:
    first = driver.request(config={"epochs": 10})
    again = driver.request(config={"epochs": 10})
    assert sent(again) == sent(first)[:1] and others(again) == []
    assert driver.core.reservation is not None and driver.core.reservation.deadline == 30.0


def test_duplicate_assignment_changes_nothing(driver: Driver) -> None:
    running(driver)
    assert driver.assign() == []
    assert driver.core.state is WorkerState.RUNNING


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"app_message_type": "job_request", "job_type": "train-demo"}, "job_id"),
        ({"app_message_type": "job_request", "job_id": 7, "job_type": "train-demo"}, "job_id"),
        (
            {
                "app_message_type": "job_request",
                "job_id": "j",
                "job_type": "train-demo",
                "requirements": {"min_gpu_memory_mb": "lots"},
            },
            "requirements.min_gpu_memory_mb",
        ),
        (
            {"app_message_type": "job_request", "job_id": "j", "job_type": "train-demo", "config": []},
            "config",
        ),
        ({"app_message_type": "job_assignment"}, "job_id"),
        ({"app_message_type": "job_cancel", "job_id": ""}, "job_id"),
        (["not", "a", "dict"], "payload"),
        ({"no_type": 1}, "app_message_type"),
    ],
)
def test_malformed_payloads_get_an_app_error(driver: Driver, payload: object, field: str) -> None:
    driver.request()
    before = (driver.core.status, driver.core.reservation)
    out = driver.message("client", payload)
    ((to, error),) = sent(out)
    assert to == "client" and error["app_message_type"] == "app_error" and error["code"] == "INVALID_MESSAGE"
    assert error["message"].startswith(f"{field}:")
    assert others(out) == [] and (driver.core.status, driver.core.reservation) == before


def test_offer_from_a_stranger_is_refused(driver: Driver) -> None:
    running(driver)
    out = driver.message("mallory", {"app_message_type": "rtc_offer", "job_id": "job-1", "sdp": "v=0"})
    assert sent(out) == [
        (
            "mallory",
            {
                "app_message_type": "app_error",
                "code": "NOT_ASSIGNED",
                "message": "this job is not assigned to you here",
                "job_id": "job-1",
            },
        )
    ]


def test_no_offers_while_reserved(driver: Driver) -> None:
    driver.request()
    out = driver.message("client", {"app_message_type": "rtc_offer", "job_id": "job-1", "sdp": "v=0"})
    assert sent(out)[0][1]["code"] == "NOT_ASSIGNED"


def test_results_stay_fetchable_until_retention_ends(driver: Driver) -> None:
    running(driver)
    driver.feed(RunSucceeded("job-1", 1.0, None), at=100.0)
    offer = {"app_message_type": "rtc_offer", "job_id": "job-1", "sdp": "v=0"}
    ready = AcceptOffer("job-1", "client", "v=0", {}, inputs_committed=True, results_ready=True)
    assert driver.message("client", offer) == [ready]
    assert driver.core.next_deadline() == 3700.0
    assert driver.feed(TimerFired(), at=3700.0) == [CleanupJob("job-1")]
    assert sent(driver.message("client", offer))[0][1]["code"] == "NOT_ASSIGNED"


def test_job_sync_replays_the_events_after_a_sequence_number(driver: Driver) -> None:
    running(driver)
    driver.feed(RunProgress("job-1", 0.5, "half"))
    driver.feed(RunSucceeded("job-1", 1.0, None))
    out = driver.message("client", {"app_message_type": "job_sync", "job_id": "job-1", "after_seq": 1})
    assert [(p["seq"], p["app_message_type"]) for _, p in sent(out)] == [
        (2, "job_status"),
        (3, "job_complete"),
    ]
    stranger = driver.message("mallory", {"app_message_type": "job_sync", "job_id": "job-1"})
    assert sent(stranger)[0][1]["code"] == "UNKNOWN_JOB"


def test_a_bounded_job_sync_replays_its_range_and_ends_with_the_head(driver: Driver) -> None:
    running(driver)  # seq 1: starting
    driver.feed(RunProgress("job-1", 0.5, "half"))
    driver.feed(RunSucceeded("job-1", 1.0, None))
    probe = {"app_message_type": "job_sync", "job_id": "job-1", "after_seq": 3, "upto_seq": 3}
    assert [p for _, p in sent(driver.message("client", probe))] == [
        {"app_message_type": "job_head", "job_id": "job-1", "last_seq": 3, "upto_seq": 3}
    ]
    bounded = {"app_message_type": "job_sync", "job_id": "job-1", "after_seq": 0, "upto_seq": 2}
    out = driver.message("client", bounded)
    assert [(p["app_message_type"], p.get("seq")) for _, p in sent(out)] == [
        ("job_status", 1),
        ("job_status", 2),
        ("job_head", None),
    ]


def test_after_a_restore_each_client_with_a_data_channel_is_told_it_is_gone(driver: Driver) -> None:
    running(driver)
    driver.message("client", {"app_message_type": "rtc_offer", "job_id": "job-1", "sdp": "v=0"})
    out = driver.feed(Restored())
    assert [(to, p["app_message_type"], p["code"], p["job_id"]) for to, p in sent(out)] == [
        ("client", "app_error", "CHANNEL_LOST", "job-1")
    ]
    assert others(out) == [AdoptRun(driver.job(), 0, None)]  # test_adoption.py: the runs
    assert sent(driver.feed(Restored())) == []  # told once
    # The same offer again is a new channel now, not a repeat to ignore.
    out = driver.message("client", {"app_message_type": "rtc_offer", "job_id": "job-1", "sdp": "v=0"})
    assert [type(i).__name__ for i in others(out)] == ["AcceptOffer"]


def test_inputs_that_never_arrive_fail_the_job(driver: Driver) -> None:
    driver.request()
    driver.assign()
    out = driver.feed(TimerFired(), at=600.0)
    ((_, failed),) = sent(out)
    assert failed["error"]["code"] == "INPUT_TIMEOUT" and failed["error"]["recoverable"] is True
    assert others(out) == [Advertise(AVAILABLE, None), CleanupJob("job-1", reclaim=True)]


def test_reused_job_id_is_refused(driver: Driver) -> None:
    running(driver)
    driver.feed(RunSucceeded("job-1", 1.0, None))
    ((_, reply),) = sent(driver.request())
    assert reply["accepted"] is False and "already used" in reply["details"][0]


# --- graceful shutdown ---------------------------------------------------------------------------------------


def test_drain_releases_a_reservation_and_refuses_new_jobs(driver: Driver) -> None:
    driver.request()
    out = driver.feed(Drain())
    assert sent(out) == [("client", {"app_message_type": "reservation_expired", "job_id": "job-1"})]
    ((_, reply),) = sent(driver.request("other", job_id="job-2"))
    assert reply["reason"] == "draining"


def test_drain_lets_a_running_job_finish(driver: Driver) -> None:
    running(driver)
    assert driver.feed(Drain()) == []
    out = driver.feed(RunSucceeded("job-1", 1.0, None))
    assert sent(out)[0][1]["app_message_type"] == "job_complete"


def test_drain_with_cancel_stops_the_run_and_fails_the_job(driver: Driver) -> None:
    running(driver)
    assert driver.feed(Drain(cancel_running=True)) == [StopRun("job-1")]
    out = driver.feed(RunStopped("job-1"))
    ((_, failed),) = sent(out)
    assert failed["error"] == {
        "code": "WORKER_SHUTDOWN",
        "message": "the worker shut down before the job finished",
        "recoverable": True,
    }


def test_client_cancel_during_shutdown_stop_is_acknowledged_as_a_cancel(driver: Driver) -> None:
    running(driver)
    driver.feed(Drain(cancel_running=True))
    assert driver.cancel() == []
    out = driver.feed(RunStopped("job-1"))
    assert sent(out)[0][1]["app_message_type"] == "job_cancelled"


@pytest.mark.parametrize("cancel_running", [False, True])
def test_drain_fails_a_job_still_awaiting_inputs(driver: Driver, cancel_running: bool) -> None:
    driver.request()
    driver.assign()
    out = driver.feed(Drain(cancel_running=cancel_running))
    assert sent(out)[0][1]["error"]["code"] == "WORKER_SHUTDOWN"
    assert driver.core.status is AVAILABLE


def test_invalid_job_config_is_rejected_as_incompatible() -> None:
    from fsm_worker.protocol.worker.coordinator import JobCoordinator

    from .conftest import CAPS, CONFIG

    def check(request: object) -> list[str]:
        return ["config field 'epochs': must be a positive integer"]

    core = JobCoordinator(CAPS, CONFIG, check_config=check)
    out = core.handle(
        PeerMessage("c", {"app_message_type": "job_request", "job_id": "j", "job_type": "train-demo"}), 0
    )
    ((_, reply),) = sent(out)
    assert reply["reason"] == "incompatible" and reply["details"] == [
        "config field 'epochs': must be a positive integer"
    ]
    assert core.status is AVAILABLE


# --- Soft stop (job_stop): the run ends early, as completed, and keeps its outputs ---------------------------


def stop(driver: Driver, sender: str = "client", job_id: str = "job-1") -> list[Instruction]:
    return driver.message(sender, {"app_message_type": "job_stop", "job_id": job_id})


def test_job_stop_stops_the_run_gracefully(driver: Driver) -> None:
    running(driver)
    out = stop(driver)
    assert out == [StopRun("job-1", graceful=True)]
    assert driver.core.state is WorkerState.STOPPING_EARLY and driver.core.status is BUSY


def test_stopped_run_completes_with_stopped_early_and_keeps_its_results(driver: Driver) -> None:
    running(driver)
    stop(driver)
    out = driver.feed(RunSucceeded("job-1", 0.5, 0.02, metrics={"epoch": 3, "loss": 0.25}))
    complete = {
        "app_message_type": "job_complete",
        "status": "completed",
        "progress": 1.0,
        "job_id": "job-1",
        "result": {"training_duration_minutes": 0.5, "model_size_mb": 0.02},
        "seq": 2,
        "metrics": {"epoch": 3, "loss": 0.25},
        "stopped_early": True,
    }
    assert sent(out) == [("client", complete)]
    assert others(out) == [Advertise(AVAILABLE, None), PublishResults("job-1")]
    assert driver.core.retained_job_ids() == ["job-1"]


def test_run_stopped_after_job_stop_completes_with_the_time_it_ran(driver: Driver) -> None:
    running(driver)  # started at 0.0
    stop(driver)
    out = driver.feed(RunStopped("job-1"), at=90.0)
    ((_, complete),) = sent(out)
    assert complete["app_message_type"] == "job_complete" and complete["stopped_early"] is True
    assert complete["result"] == {"training_duration_minutes": 1.5, "model_size_mb": None}
    assert driver.core.retained_job_ids() == ["job-1"]


def test_cancel_after_job_stop_stops_now_and_cancels(driver: Driver) -> None:
    running(driver)
    stop(driver)
    assert driver.cancel() == [StopRun("job-1", graceful=False)]
    out = driver.feed(RunSucceeded("job-1", 1.0, None))
    assert [p["app_message_type"] for _, p in sent(out)] == ["job_cancelled"]
    assert others(out) == [Advertise(AVAILABLE, None), CleanupJob("job-1", reclaim=True)]


@pytest.mark.parametrize("who", ["stranger", "not running", "reserved", "other job"])
def test_job_stop_that_is_not_for_a_running_job_is_ignored(driver: Driver, who: str) -> None:
    if who == "reserved":
        driver.request()
    elif who == "not running":
        driver.request()
        driver.assign()
    else:
        running(driver)
    before = driver.core.state
    sender, job_id = (
        ("mallory", "job-1") if who == "stranger" else ("client", "job-9" if who == "other job" else "job-1")
    )
    assert stop(driver, sender, job_id) == []
    assert driver.core.state is before


def test_a_cancel_is_not_graceful(driver: Driver) -> None:
    running(driver)
    assert driver.cancel() == [StopRun("job-1", graceful=False)]


# --- Metrics pass through to job_status and job_complete -----------------------------------------------------


def test_progress_metrics_reach_the_client_typed(driver: Driver) -> None:
    running(driver)
    metrics = {"epoch": 7, "loss": 0.41, "val_accuracy": 0.9, "note": "text", "flag": True}
    out = driver.feed(RunProgress("job-1", 0.35, "epoch 7/20", metrics))
    ((_, status),) = sent(out)
    assert status["metrics"] == {"epoch": 7, "loss": 0.41, "extra": {"val_accuracy": 0.9}}


def test_progress_without_metrics_sends_none(driver: Driver) -> None:
    running(driver)
    ((_, status),) = sent(driver.feed(RunProgress("job-1", 0.5, "half")))
    assert "metrics" not in status


# --- The data channel's fate is the core's: answer, failure, repeated offers ---------------------------------


def offer(driver: Driver, sdp: str = "v=0", sender: str = "client") -> list[Instruction]:
    return driver.message(sender, {"app_message_type": "rtc_offer", "job_id": "job-1", "sdp": sdp})


def test_the_answer_goes_to_the_client_once_ready(driver: Driver) -> None:
    driver.request()
    driver.assign()
    offer(driver)
    out = driver.feed(ChannelAnswered("job-1", "client", "v=0 answer", {"fast": 1}))
    assert sent(out) == [
        (
            "client",
            {
                "app_message_type": "rtc_answer",
                "job_id": "job-1",
                "sdp": "v=0 answer",
                "options": {"fast": 1},
            },
        )
    ]
    assert driver.feed(ChannelOpened("job-1")) == []


def test_a_repeated_offer_is_ignored_and_a_new_one_replaces_the_channel(driver: Driver) -> None:
    driver.request()
    driver.assign()
    assert len(offer(driver)) == 1
    assert offer(driver) == []  # the same offer delivered twice
    assert offer(driver, "v=1") == [AcceptOffer("job-1", "client", "v=1", {})]


def test_a_failed_channel_is_closed_and_reported(driver: Driver) -> None:
    driver.request()
    driver.assign()
    offer(driver)
    out = driver.feed(ChannelFailed("job-1", "client", "the data channel did not open within 15 s"))
    assert others(out) == [CloseChannel("job-1")]
    ((to, error),) = sent(out)
    assert to == "client" and error["code"] == "RTC_SETUP_FAILED" and "did not open" in error["message"]
    assert len(offer(driver)) == 1  # the client may try the same offer again


def test_an_answer_for_a_job_that_is_gone_is_dropped(driver: Driver) -> None:
    driver.request()
    driver.assign()
    offer(driver)
    driver.cancel()
    assert driver.feed(ChannelAnswered("job-1", "client", "v=0 answer", {})) == []


def test_an_offer_after_inputs_say_they_are_committed(driver: Driver) -> None:
    driver.request()
    driver.assign()
    driver.feed(InputsReady("job-1"))
    assert offer(driver) == [AcceptOffer("job-1", "client", "v=0", {}, inputs_committed=True)]


def test_a_status_change_is_advertised_before_the_messages_it_causes(driver: Driver) -> None:
    out = driver.request()
    assert isinstance(out[0], Advertise) and isinstance(out[1], Send)


# --- the per-job key (issue 10: a job's events and files are bound to a credential, not to a peer id) ---------

KEY = "k" * 43
KEY_SHA256 = hashlib.sha256(KEY.encode()).hexdigest()


def test_a_keyed_job_answers_only_messages_that_present_its_key(driver: Driver) -> None:
    driver.request(job_key_sha256=KEY_SHA256)
    # Assigning without the key (or with a wrong one) is refused like a stranger's assignment.
    for wrong in ({}, {"job_key": "x" * 43}):
        out = driver.message("client", {"app_message_type": "job_assignment", "job_id": "job-1", **wrong})
        assert driver.core.status is RESERVED and not any(isinstance(i, Advertise) for i in out)
    driver.message("client", {"app_message_type": "job_assignment", "job_id": "job-1", "job_key": KEY})
    assert driver.core.status is BUSY
    # The same peer id without the key: no replay, no data channel, no cancel.
    out = driver.message("client", {"app_message_type": "job_sync", "job_id": "job-1", "after_seq": 0})
    assert [p["code"] for _, p in sent(out)] == ["UNKNOWN_JOB"]
    out = driver.message("client", {"app_message_type": "rtc_offer", "job_id": "job-1", "sdp": "v=0\r\n"})
    assert [p["code"] for _, p in sent(out)] == ["NOT_ASSIGNED"]
    driver.cancel()
    assert driver.core.status is BUSY
    # With the key, all of it works.
    out = driver.message(
        "client", {"app_message_type": "job_sync", "job_id": "job-1", "after_seq": 0, "job_key": KEY}
    )
    assert all(p["app_message_type"] != "app_error" for _, p in sent(out))
    out = driver.message("client", {"app_message_type": "job_cancel", "job_id": "job-1", "job_key": KEY})
    assert [p["app_message_type"] for _, p in sent(out)] == ["job_cancelled"]
    assert driver.core.status is AVAILABLE
    # The finished job's events are kept for the key's holder only.
    out = driver.message("client", {"app_message_type": "job_sync", "job_id": "job-1", "after_seq": 0})
    assert [p["code"] for _, p in sent(out)] == ["UNKNOWN_JOB"]
    out = driver.message(
        "client", {"app_message_type": "job_sync", "job_id": "job-1", "after_seq": 0, "job_key": KEY}
    )
    assert [p["app_message_type"] for _, p in sent(out)] == ["job_cancelled"]
