"""Random event sequences against a worker with 4 slots and a queue (issue 12's property tests).

After every step: never more jobs in slots than slots (and never more GPUs), a GPU never in two jobs, every
request answered exactly once, the core's own invariants (`validate_state`), and the queue's order:

- a job takes slots ahead of an earlier queued job that still waits (it *passes* it: a new request placed while
  jobs wait, or a later queued job) at most `queue_bypass_limit` times per waiting job; with the limit at 0
  the jobs that take slots from the queue are always its first ones (strict FIFO);
- no slot stays idle while a queued job could take it (`Scheduler.start_next` finds nothing);
- what is advertised is true: `free_slots` are the slots a new one-GPU request would get now, and the status
  is `available` exactly when there is one.

At the end every queued entry was assigned a slot, expired or cancelled.
"""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fsm_worker.protocol.messages import JobFailed, JobResponse
from fsm_worker.protocol.worker.coordinator import JobCoordinator
from fsm_worker.protocol.worker.events import (
    Drain,
    Event,
    InputsReady,
    PeerMessage,
    RunFailed,
    RunStarted,
    RunSucceeded,
    TimerFired,
)
from fsm_worker.protocol.worker.instructions import Instruction, Send
from fsm_worker.protocol.worker.slots import Slot
from fsm_worker.protocol.worker.states import WorkerState

from .conftest import CAPS, CONFIG

SLOTS = 4
CLIENTS = st.sampled_from(["c1", "c2", "c3", "c4"])
JOBS = st.sampled_from([f"j{i}" for i in range(12)])
IN_SLOT = {WorkerState.RESERVED, WorkerState.AWAITING_INPUTS, WorkerState.STARTING, WorkerState.RUNNING,
           WorkerState.STOPPING_FOR_CANCEL, WorkerState.STOPPING_FOR_SHUTDOWN, WorkerState.STOPPING_EARLY}  # fmt: skip
QUEUED = {WorkerState.QUEUED, WorkerState.QUEUED_ASSIGNED}


class SlotsMachine(RuleBasedStateMachine):
    BYPASS_LIMIT = 2

    def __init__(self) -> None:
        super().__init__()
        config = attrs.evolve(
            CONFIG,
            queue_size=6,
            max_jobs_per_client=2,
            queue_lease=50.0,
            queue_bypass_limit=self.BYPASS_LIMIT,
        )
        self.passes: dict[str, int] = {}  # queued job id → how often a job took slots ahead of it
        self.core = JobCoordinator(CAPS, config, slots=tuple(Slot(i, (i,), 8192) for i in range(SLOTS)))
        self.now = 0.0
        self.owner: dict[str, str] = {}  # job id → the client whose request was accepted
        self.ever_queued: set[str] = set()
        self.left_queue: dict[str, str] = {}  # job id → "slot", "expired", "cancelled", "drained"
        self.drained = False

    # --- feeding ------------------------------------------------------------------------------------------------

    def feed(self, event: Event) -> list[Instruction]:
        before = {e.job_id for e in self.core.sched.queue.entries}
        order = [e.job_id for e in self.core.sched.queue.entries]
        in_slots = {h.job_id for h in self.core.sched.slots.holders if h is not None}
        out = self.core.handle(event, self.now)
        self.core.validate_state(self.now)
        sched = self.core.sched
        after = {e.job_id for e in sched.queue.entries}
        gone = before - after
        to_slot = [j for j in order if j in gone and self.core.job_state(j) in IN_SLOT]
        for job_id in gone:
            self.left_queue[job_id] = "slot" if job_id in to_slot else self._why_left(job_id, out)
        remaining = [j for j in order if j in to_slot or j in after]
        if self.BYPASS_LIMIT == 0:  # strict FIFO: the jobs that took slots were the first of the queue
            assert to_slot == remaining[: len(to_slot)], (to_slot, order)
        # who passed whom: a new request placed passes every waiting job, a queued job the ones before it
        placed_new = {h.job_id for h in sched.slots.holders if h is not None} - in_slots - set(to_slot)
        for job_id in after & before:
            ahead_of = order.index(job_id)
            passed_by = len(placed_new) + sum(order.index(j) > ahead_of for j in to_slot)
            self.passes[job_id] = self.passes.get(job_id, 0) + passed_by
        for entry in sched.queue.entries:
            assert self.passes.get(entry.job_id, 0) == entry.bypassed <= self.BYPASS_LIMIT, (
                entry,
                self.passes,
            )
        assert sched.start_next(self.now) is None, "a queued job that could start now waits"
        view = self.core.view()
        may_take = 0 if sched.holds_free_slots else sched.slots.free
        assert view.free_slots == may_take and (self.core.status.value == "available") == (may_take > 0)
        assert sched.may_place(1) == (may_take > 0)
        self.ever_queued |= after
        return out

    def _why_left(self, job_id: str, out: list[Instruction]) -> str:
        messages = [i.message for i in out if isinstance(i, Send) and i.message.job_id == job_id]  # type: ignore[attr-defined]
        if any(isinstance(m, JobFailed) and m.error.code == "QUEUE_LEASE_EXPIRED" for m in messages):
            return "expired"
        return "drained" if self.drained else "cancelled"

    def message(self, sender: str, kind: str, job_id: str, **fields: Any) -> list[Instruction]:
        payload = {"app_message_type": kind, "job_id": job_id, **fields}
        return self.feed(PeerMessage(sender, payload))

    # --- rules --------------------------------------------------------------------------------------------------

    @rule(client=CLIENTS, job=JOBS, gpus=st.sampled_from([1, 1, 1, 2, 5]), queue=st.booleans())
    def request(self, client: str, job: str, gpus: int, queue: bool) -> None:
        held = self.core.job_state(job) is not WorkerState.AVAILABLE
        out = self.message(client, "job_request", job, job_type="train-demo", requirements={"gpus": gpus},
                           queue=queue)  # fmt: skip
        answers = [
            (i.to, i.message) for i in out if isinstance(i, Send) and isinstance(i.message, JobResponse)
        ]
        assert len(answers) == 1
        to, reply = answers[0]
        assert to == client and reply.job_id == job
        if reply.accepted and held:
            assert self.owner[job] == client, "a held job is accepted again only for its own client"
        elif reply.accepted:
            self.owner[job] = client
        if reply.queued:
            assert (queue or held) and reply.queue_position is not None and reply.queue_position >= 1
        if gpus > SLOTS and not held:
            assert not reply.accepted and reply.reason == ("draining" if self.drained else "incompatible")

    @rule(client=CLIENTS, job=JOBS)
    def assign(self, client: str, job: str) -> None:
        self.message(client, "job_assignment", job)

    @rule(job=JOBS, stranger=st.booleans())
    def cancel(self, job: str, stranger: bool) -> None:
        self.message("mallory" if stranger else self.owner.get(job, "c1"), "job_cancel", job)

    @rule(job=JOBS)
    def keep_alive(self, job: str) -> None:
        self.message(self.owner.get(job, "c1"), "job_sync", job)

    @rule(job=JOBS)
    def inputs(self, job: str) -> None:
        self.feed(InputsReady(job))

    @rule(job=JOBS)
    def started(self, job: str) -> None:
        self.feed(RunStarted(job))

    @rule(job=JOBS, ok=st.booleans())
    def ended(self, job: str, ok: bool) -> None:
        self.feed(RunSucceeded(job, 1.0, None) if ok else RunFailed(job, "EXIT_NONZERO", "boom", False))

    @rule(seconds=st.sampled_from([1.0, 10.0, 31.0, 60.0]))
    def clock(self, seconds: float) -> None:
        self.now += seconds
        self.feed(TimerFired())

    @precondition(lambda self: not self.drained)
    @rule()
    def drain(self) -> None:
        self.drained = True
        self.feed(Drain(cancel_running=True))

    # --- invariants ---------------------------------------------------------------------------------------------

    @invariant()
    def never_more_in_slots_than_slots(self) -> None:
        table = self.core.sched.slots
        held = {h.job_id for h in table.holders if h is not None}
        assert len(held) <= SLOTS
        assert sum(len(table.slots_of(j)) for j in held) <= SLOTS
        gpus = [gpu for j in held for slot in table.slots_of(j) for gpu in slot.gpus]
        assert len(gpus) == len(set(gpus)), "a GPU in two jobs"

    def teardown(self) -> None:
        """Run every job to its end and let time pass: nothing stays queued, each entry left for a reason."""
        for _ in range(40):
            jobs = list(self.core._jobs)
            if not jobs and not self.core.sched.queue.length:
                break
            for job_id in jobs:
                for event in (InputsReady(job_id), RunStarted(job_id), RunSucceeded(job_id, 1.0, None)):
                    self.feed(event)
                self.message(self.owner.get(job_id, "c1"), "job_assignment", job_id)
            self.now += 31.0
            self.feed(TimerFired())
        assert self.core.sched.queue.length == 0 and not self.core._jobs
        assert self.ever_queued <= set(self.left_queue)
        assert set(self.left_queue.values()) <= {"slot", "expired", "cancelled", "drained"}


SlotsMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSlots = SlotsMachine.TestCase


class StrictFifoSlotsMachine(SlotsMachine):
    BYPASS_LIMIT = 0


StrictFifoSlotsMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestStrictFifoSlots = StrictFifoSlotsMachine.TestCase
