"""Totality: every (status, trigger, sender) combination has an outcome the table allows, and a refusal changes nothing."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable

import pytest

from fsm_worker.protocol.messages import AppError, JobError, JobResponse, JobResult
from fsm_worker.protocol.worker.coordinator import ANY, TIMED_TRIGGERS, TRANSITIONS
from fsm_worker.protocol.worker.events import (
    Drain,
    Event,
    InputsReady,
    PeerMessage,
    RunFailed,
    RunProgress,
    RunStarted,
    RunStopped,
    RunSucceeded,
    Send,
    WorkerStatus,
)

from .conftest import Driver


def _reserved(d: Driver) -> None:
    d.request()


def _awaiting_inputs(d: Driver) -> None:
    d.request()
    d.assign()


def _running(d: Driver) -> None:
    _awaiting_inputs(d)
    d.feed(InputsReady("job-1"))
    d.feed(RunStarted("job-1"))


def _stopping(d: Driver) -> None:
    _running(d)
    d.cancel()


def _finished(d: Driver) -> None:
    _running(d)
    d.feed(RunSucceeded("job-1", JobResult(1.0, None)))


def _draining(d: Driver) -> None:
    d.feed(Drain())


SITUATIONS: dict[str, Callable[[Driver], None]] = {
    "available": lambda d: None,
    "reserved": _reserved,
    "awaiting_inputs": _awaiting_inputs,
    "running": _running,
    "stopping": _stopping,
    "finished": _finished,
    "draining": _draining,
}
SENDERS = {"owner": "client", "stranger": "mallory"}
JOB_IDS = {"held": "job-1", "other": "job-9"}


def message_events(sender: str, job_id: str) -> dict[str, Event]:
    return {
        "job_request": PeerMessage(
            sender, {"app_message_type": "job_request", "job_id": job_id, "job_type": "train-demo"}
        ),
        "job_assignment": PeerMessage(sender, {"app_message_type": "job_assignment", "job_id": job_id}),
        "job_cancel": PeerMessage(sender, {"app_message_type": "job_cancel", "job_id": job_id}),
        "rtc_offer": PeerMessage(sender, {"app_message_type": "rtc_offer", "job_id": job_id, "sdp": "v=0"}),
        "job_sync": PeerMessage(sender, {"app_message_type": "job_sync", "job_id": job_id}),
    }


def run_events(job_id: str) -> dict[str, Event]:
    return {
        "inputs_ready": InputsReady(job_id),
        "run_started": RunStarted(job_id),
        "run_progress": RunProgress(job_id, 0.5, "x"),
        "run_succeeded": RunSucceeded(job_id, JobResult(1.0, None)),
        "run_failed": RunFailed(job_id, JobError("E", "m", False)),
        "run_stopped": RunStopped(job_id),
        "drain": Drain(cancel_running=True),
    }


def allowed_destinations(trigger: str, source: WorkerStatus) -> set[WorkerStatus]:
    dests = set()
    for row in TRANSITIONS:
        sources = row["source"] if isinstance(row["source"], list) else [row["source"]]
        if row["trigger"] == trigger and (ANY in sources or source in sources):
            dests.add(source if row["dest"] is None else row["dest"])
    return dests


def snapshot(d: Driver) -> tuple[object, ...]:
    core = d.core
    return (
        core.status,
        core.reservation,
        core.current_job,
        core.phase,
        core.draining,
        copy.deepcopy(core._retained),
    )


CASES = [
    (situation, trigger, sender_kind, job_kind)
    for situation, sender_kind, job_kind in itertools.product(SITUATIONS, SENDERS, JOB_IDS)
    for trigger in message_events("x", "y")
] + [
    (situation, trigger, "host", job_kind)
    for situation, job_kind in itertools.product(SITUATIONS, JOB_IDS)
    for trigger in run_events("y")
]


@pytest.mark.parametrize(("situation", "trigger", "sender_kind", "job_kind"), CASES)
def test_every_combination_is_allowed_or_refused_without_change(
    situation: str, trigger: str, sender_kind: str, job_kind: str
) -> None:
    d = Driver()
    SITUATIONS[situation](d)
    job_id = JOB_IDS[job_kind]
    events = run_events(job_id) if sender_kind == "host" else message_events(SENDERS[sender_kind], job_id)
    before_status, before = d.core.status, snapshot(d)
    out = d.feed(events[trigger])
    assert d.core.status in allowed_destinations(trigger, before_status)
    messages = [item.message for item in out if isinstance(item, Send)]
    refused = any(
        isinstance(m, AppError) or (isinstance(m, JobResponse) and not m.accepted) for m in messages
    )
    if refused or (
        not out and trigger != "drain"
    ):  # draining silently sets its flag; everything else is inert
        assert snapshot(d) == before


def test_every_trigger_has_a_catch_all_row() -> None:
    """Apart from deadlines (fired only when due), each trigger ends in an unguarded row from any status."""
    triggers = {row["trigger"] for row in TRANSITIONS} - set(TIMED_TRIGGERS)
    for trigger in triggers:
        rows = [row for row in TRANSITIONS if row["trigger"] == trigger]
        last = rows[-1]
        covered = {
            s
            for row in rows
            if not row["conditions"] and not row["unless"]
            for s in (
                WorkerStatus
                if row["source"] == ANY
                else (row["source"] if isinstance(row["source"], list) else [row["source"]])
            )
        }
        assert covered == set(WorkerStatus) or last["source"] == ANY, trigger


def test_every_guard_and_action_exists() -> None:
    from fsm_worker.protocol.worker.coordinator import JobCoordinator

    for row in TRANSITIONS:
        for name in (*row["conditions"], *row["unless"], *row["after"]):
            assert callable(getattr(JobCoordinator, name, None)), name
