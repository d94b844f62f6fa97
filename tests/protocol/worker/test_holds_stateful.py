"""Hypothesis: whatever happens, the worker's hold claims and releases balance (issue 10 item 8).

A reference of what the server counts for this worker (claims, syncs, releases) is kept from the instructions
alone; after every step it must equal what the core holds: every job in a slot or the queue with a hold, and
every claim still out. A release is only ever for a hold the server counts (so each is released exactly once).
"""

from __future__ import annotations

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fsm_worker.protocol.worker.coordinator import JobCoordinator
from fsm_worker.protocol.worker.events import (
    Drain,
    Event,
    HoldGranted,
    HoldRefused,
    HoldsOffered,
    HoldUnanswered,
    InputsReady,
    InputsStarted,
    PeerMessage,
    Restored,
    RunFailed,
    RunStarted,
    RunSucceeded,
    TimerFired,
)
from fsm_worker.protocol.worker.hold_events import ClaimHold, ReleaseHold, SyncHolds

from .conftest import CAPS, CONFIG, Driver

CLIENTS = st.sampled_from(["alice", "bob", "carol"])
JOBS = st.sampled_from([f"job-{n}" for n in range(5)])


class HoldBalance(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.d = Driver()
        config = attrs.evolve(CONFIG, first_input_timeout=20.0, queue_size=2, queue_lease=40.0)
        self.d.core = JobCoordinator(CAPS, config)
        self.counted: set[tuple[str, str]] = set()  # what the server counts for this worker
        self.offered = False

    def _feed(self, event: Event) -> None:
        for item in self.d.feed(event):
            if isinstance(item, ClaimHold):
                assert self.offered, "no claim unless the server counts holds"
                self.counted.add((item.client_id, item.job_id))
            elif isinstance(item, ReleaseHold):
                key = (item.client_id, item.job_id)
                assert key in self.counted, f"released a hold that is not counted: {key}"
                self.counted.discard(key)
            elif isinstance(item, SyncHolds):
                self.counted = set(item.holds)

    def _message(self, sender: str, kind: str, job_id: str, **extra: object) -> None:
        self._feed(PeerMessage(sender, {"app_message_type": kind, "job_id": job_id, **extra}))

    @rule(enabled=st.booleans())
    def offered_holds(self, enabled: bool) -> None:
        self.offered = enabled
        self._feed(HoldsOffered(enabled))

    @rule(client=CLIENTS, job=JOBS, queue=st.booleans())
    def request(self, client: str, job: str, queue: bool) -> None:
        self._message(client, "job_request", job, job_type="train-demo", queue=queue)

    @precondition(lambda self: bool(self.d.core._claims))
    @rule(data=st.data(), answer=st.sampled_from(["granted", "degraded", "refused"]))
    def answer_claim(self, data: st.DataObject, answer: str) -> None:
        job = data.draw(st.sampled_from(sorted(self.d.core._claims)))
        if answer == "refused":
            self.counted = {key for key in self.counted if key[1] != job}  # the server counted nothing
            self._feed(HoldRefused(job, "max_holds_per_client (2)"))
        else:
            self._feed(HoldUnanswered(job, "no ack") if answer == "degraded" else HoldGranted(job))

    @rule(job=JOBS)
    def stray_answer(self, job: str) -> None:
        if job not in self.d.core._claims:
            self._feed(HoldGranted(job))

    @rule(client=CLIENTS, job=JOBS, kind=st.sampled_from(["job_assignment", "job_cancel", "job_sync"]))
    def client_message(self, client: str, job: str, kind: str) -> None:
        self._message(client, kind, job)

    @rule(job=JOBS, step=st.sampled_from(["started", "ready", "run", "succeeded", "failed"]))
    def run_event(self, job: str, step: str) -> None:
        events: dict[str, Event] = {
            "started": InputsStarted(job), "ready": InputsReady(job), "run": RunStarted(job),
            "succeeded": RunSucceeded(job, 1.0, None), "failed": RunFailed(job, "E", "m", False),
        }  # fmt: skip
        self._feed(events[step])

    @rule(dt=st.floats(1.0, 50.0))
    def advance(self, dt: float) -> None:
        self.d.now += dt
        self._feed(TimerFired())

    @rule(cancel=st.booleans())
    def drain(self, cancel: bool) -> None:
        self._feed(Drain(cancel_running=cancel))

    @rule()
    def restored(self) -> None:
        self._feed(Restored(runs_survive=False))

    @invariant()
    def holds_balance(self) -> None:
        core = self.d.core
        held = {(r.hold_client, job_id) for job_id, r in core._jobs.items() if r.hold_client is not None}
        claims = {(c.sender, job_id) for job_id, c in core._claims.items()}
        assert self.counted == held | claims


HoldBalance.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_holds_balance = HoldBalance.TestCase
