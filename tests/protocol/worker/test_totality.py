"""Totality: every (state incl. sub-state, trigger, sender) combination has an outcome the table allows, and a
refusal changes nothing. States and triggers are enumerated from the machine, not by hand."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable

import pytest

from fsm_worker.protocol.messages import AppError, JobResponse
from fsm_worker.protocol.worker.coordinator import ANY, INTAKE, TIMED_TRIGGERS, TRANSITIONS, JobCoordinator
from fsm_worker.protocol.worker.events import (
    ChannelAnswered,
    ChannelClosed,
    ChannelFailed,
    ChannelOpened,
    Drain,
    Event,
    HoldGranted,
    HoldRefused,
    HoldsOffered,
    InputsReady,
    InputsStarted,
    JobFilesRemoved,
    PeerMessage,
    Restored,
    RunFailed,
    RunProgress,
    RunStarted,
    RunStopped,
    RunSucceeded,
    Started,
    TimerFired,
)
from fsm_worker.protocol.worker.instructions import Send
from fsm_worker.protocol.worker.states import Intake, WorkerState
from fsm_worker.protocol.worker.table import INTAKE_TIMED_TRIGGERS

from .conftest import CAPS, CONFIG, Driver


def _reserved(d: Driver) -> None:
    d.request()


def _awaiting_inputs(d: Driver) -> None:
    d.request()
    d.assign()


def _starting(d: Driver) -> None:
    _awaiting_inputs(d)
    d.feed(InputsReady("job-1"))


def _running(d: Driver) -> None:
    _starting(d)
    d.feed(RunStarted("job-1"))


def _stopping_for_cancel(d: Driver) -> None:
    _running(d)
    d.cancel()


def _stopping_for_shutdown(d: Driver) -> None:
    _running(d)
    d.feed(Drain(cancel_running=True))


def _stopping_early(d: Driver) -> None:
    _running(d)
    d.message("client", {"app_message_type": "job_stop", "job_id": "job-1"})


def _queued(d: Driver) -> None:
    """job-1 waits in the queue behind "holder"'s job-0, which holds the only slot."""
    d.request("holder", job_id="job-0")
    d.request(queue=True)


def _queued_assigned(d: Driver) -> None:
    _queued(d)
    d.assign()


def _finished(d: Driver) -> None:
    _running(d)
    d.feed(RunSucceeded("job-1", 1.0, None))


#: How to reach each state of the machine (a test checks that these are all of them).
REACH: dict[WorkerState, Callable[[Driver], None]] = {
    WorkerState.AVAILABLE: lambda d: None,
    WorkerState.RESERVED: _reserved,
    WorkerState.AWAITING_INPUTS: _awaiting_inputs,
    WorkerState.STARTING: _starting,
    WorkerState.RUNNING: _running,
    WorkerState.STOPPING_FOR_CANCEL: _stopping_for_cancel,
    WorkerState.STOPPING_FOR_SHUTDOWN: _stopping_for_shutdown,
    WorkerState.STOPPING_EARLY: _stopping_early,
    WorkerState.QUEUED: _queued,
    WorkerState.QUEUED_ASSIGNED: _queued_assigned,
}


def _draining(d: Driver) -> None:
    """job-1 runs on while the worker drains (the finish policy)."""
    _running(d)
    d.feed(Drain(cancel_running=False))


def _drain_overdue(d: Driver) -> None:
    """The drain's deadline passed: job-1's run is being stopped."""
    _draining(d)
    d.feed(TimerFired(), at=d.now + CONFIG.shutdown_timeout)


def _drained(d: Driver) -> None:
    """Nothing held: the drain is over at once."""
    d.feed(Drain())


def _holds_on(driver: Driver, request: bool = False) -> None:
    driver.feed(HoldsOffered(True))
    if request:
        driver.request()


#: Every state, plus situations that guards tell apart: a job finished, and each stage of a drain.
SITUATIONS: dict[str, Callable[[Driver], None]] = {
    **{state.value: reach for state, reach in REACH.items()},
    "finished": _finished,
    "draining": _draining,
    "drain_overdue": _drain_overdue,
    "drained": _drained,
    # the server counts holds: job-1's request waits for its hold (issue 10 item 8), or holds count and none is out
    "claiming": lambda d: _holds_on(d, request=True),
    "holds_on": _holds_on,
}
SENDERS = {"owner": "client", "stranger": "mallory"}
JOB_IDS = {"held": "job-1", "other": "job-9"}


def message_events(sender: str, job_id: str) -> dict[str, Event]:
    """The triggers that come with a sender (a peer, or the client a data channel belongs to)."""

    def message(kind: str, **fields: object) -> Event:
        return PeerMessage(sender, {"app_message_type": kind, "job_id": job_id, **fields})

    return {
        "job_request": message("job_request", job_type="train-demo"),
        "job_assignment": message("job_assignment"),
        "job_cancel": message("job_cancel"),
        "job_stop": message("job_stop"),
        "rtc_offer": message("rtc_offer", sdp="v=0"),
        "job_sync": message("job_sync"),
        "channel_answered": ChannelAnswered(job_id, sender, "v=0 answer", {}),
        "channel_failed": ChannelFailed(job_id, sender, "timed out"),
    }


def run_events(job_id: str) -> dict[str, Event]:
    """The triggers the host's own shells raise."""
    return {
        "inputs_started": InputsStarted(job_id),
        "inputs_ready": InputsReady(job_id),
        "run_started": RunStarted(job_id),
        "run_progress": RunProgress(job_id, 0.5, "x"),
        "run_succeeded": RunSucceeded(job_id, 1.0, None),
        "run_failed": RunFailed(job_id, "E", "m", False),
        "run_stopped": RunStopped(job_id),
        "channel_opened": ChannelOpened(job_id),
        "channel_closed": ChannelClosed(job_id),
        "job_files_removed": JobFilesRemoved(job_id),
        "restored": Restored(),
        "started": Started(),
        "drain": Drain(cancel_running=True),
        "holds_offered": HoldsOffered(True),
        "hold_granted": HoldGranted(job_id),
        "hold_refused": HoldRefused(job_id, "max_holds_per_client (2)"),
    }


def test_every_state_and_trigger_is_enumerated() -> None:
    machine = JobCoordinator(CAPS).machine
    assert {state.name for state in REACH} == set(machine.states)
    for state, reach in REACH.items():
        d = Driver()
        reach(d)
        assert d.core.job_state("job-1") is state
    triggers = set(message_events("x", "y")) | set(run_events("y"))
    assert triggers == set(machine.events) - set(TIMED_TRIGGERS)


def allowed_destinations(trigger: str, source: WorkerState) -> set[WorkerState]:
    dests = set()
    for row in TRANSITIONS:
        sources = row["source"] if isinstance(row["source"], list) else [row["source"]]
        if row["trigger"] == trigger and (ANY in sources or source in sources):
            dests.add(source if row["dest"] is None else row["dest"])
    return dests


def snapshot(d: Driver) -> tuple[object, ...]:
    core = d.core
    return (
        {job_id: (r.state, r.reservation, r.current_job) for job_id, r in core._jobs.items()},
        core.sched,
        core.intake,
        core.drain_deadline,
        core.holds_on,
        copy.deepcopy(core._retained),
        dict(core._offers),
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
    before_state, before = d.core.job_state(job_id), snapshot(d)
    held = d.core.job_state("job-1")
    out = d.feed(events[trigger])
    assert d.core.job_state(job_id) in allowed_destinations(trigger, before_state)
    assert d.core.job_state("job-1") in allowed_destinations(trigger, held) | {held}
    messages = [item.message for item in out if isinstance(item, Send)]
    refused = any(
        isinstance(m, AppError) or (isinstance(m, JobResponse) and not m.accepted) for m in messages
    )
    silent = trigger == "drain" or (trigger, before_state, sender_kind, job_kind) in SILENT_CHANGES
    # a drain or a restore answers the request whose hold is out (refused), and that is a change
    answers_claim = situation == "claiming" and trigger in ("drain", "restored")
    # everything else that says nothing is inert
    if (refused and not answers_claim) or (not out and not silent):
        assert snapshot(d) == before


#: Changes that have nothing to say yet: draining sets its flag; a cancel while the run stops for shutdown
#: changes the stop reason (the client hears `job_cancelled` when the run ends).
#: Assigning a queued job says nothing either: it keeps waiting for its slot, now assigned.
SILENT_CHANGES = {
    ("job_cancel", WorkerState.STOPPING_FOR_SHUTDOWN, "owner", "held"),
    ("job_assignment", WorkerState.QUEUED, "owner", "held"),
}


def test_every_trigger_has_a_catch_all_row() -> None:
    """Apart from deadlines (fired only when due), each trigger ends in an unguarded row from any state."""
    triggers = {row["trigger"] for row in TRANSITIONS} - set(TIMED_TRIGGERS)
    for trigger in triggers:
        rows = [row for row in TRANSITIONS if row["trigger"] == trigger]
        last = rows[-1]
        covered = {
            s
            for row in rows
            if not row["conditions"] and not row["unless"]
            for s in (
                WorkerState
                if row["source"] == ANY
                else (row["source"] if isinstance(row["source"], list) else [row["source"]])
            )
        }
        assert covered == set(WorkerState) or last["source"] == ANY, trigger


def test_every_guard_and_action_exists() -> None:
    for row in [*TRANSITIONS, *INTAKE]:
        for name in (*row.get("conditions", ()), *row.get("unless", ()), *row["after"]):
            assert callable(getattr(JobCoordinator, name, None)), name


def test_the_intake_table_is_total() -> None:
    """`drain` and `started` each have exactly one unguarded row per intake state and are also main-table
    triggers. The triggers the
    core fires itself while draining have rows from every state they are fired in (never `open`; the drain's
    deadline not from `drained`, which has none), each ending in an unguarded row."""
    external = {row["trigger"] for row in INTAKE} - set(INTAKE_TIMED_TRIGGERS)
    assert external == {"drain", "started"}
    for trigger in external:
        sources = [row["source"] for row in INTAKE if row["trigger"] == trigger]
        assert sorted(sources, key=str) == sorted(Intake, key=str) and len(sources) == len(Intake), trigger
        assert all(not row["conditions"] for row in INTAKE if row["trigger"] == trigger), trigger
        assert any(row["trigger"] == trigger for row in TRANSITIONS), trigger
    fired_from = {
        "drain_settled": {Intake.DRAINING, Intake.OVERDUE, Intake.DRAINED},
        "drain_overdue": {Intake.DRAINING, Intake.OVERDUE},
    }
    assert set(fired_from) == set(INTAKE_TIMED_TRIGGERS)
    for trigger, states in fired_from.items():
        rows = [row for row in INTAKE if row["trigger"] == trigger]
        assert {row["source"] for row in rows} == states, trigger
        for state in states:
            last = [row for row in rows if row["source"] is state][-1]
            assert not last["conditions"], (trigger, state)
