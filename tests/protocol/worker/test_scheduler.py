"""Placement with slots and a FIFO queue: exact decisions, and a stateful property test over many slots."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fsm_worker.protocol.worker.job_queue import JobQueue
from fsm_worker.protocol.worker.scheduler import Decision, Scheduler
from fsm_worker.protocol.worker.slots import Slot, SlotTable


def four_gpus(queue_size: int = 16, per_client: int = 4, bypass: int = 0) -> Scheduler:
    slots = SlotTable.of(tuple(Slot(i, (i,)) for i in range(4)))
    return Scheduler(slots, JobQueue(queue_size, per_client, bypass))


def ask(
    s: Scheduler, job: str, gpus: int = 1, client: str = "c", queue: bool = True, now: float = 0.0
) -> tuple[Scheduler, Decision]:
    return s.request(job, client, gpus, may_queue=queue, estimated_minutes=1.0, now=now)


def test_placed_then_queued_with_position_and_estimate() -> None:
    s, first = ask(four_gpus(), "a", 3)
    assert first == Decision("a", placed=True)
    s, second = ask(s, "b", 2, client="d")
    assert second == Decision("b", queued=True, queue_position=1, estimated_start_seconds=60.0)


def test_refusals_busy_incompatible_queue_full_client_cap() -> None:
    s, _ = ask(four_gpus(queue_size=1), "a", 4)
    assert ask(s, "b", queue=False)[1].reason == "busy"
    assert ask(s, "b", 5)[1].reason == "incompatible"
    s, queued = ask(s, "b", client="d")
    assert queued.queued
    assert ask(s, "c", client="e")[1] == Decision("c", reason="queue_full", detail="queue_size")
    capped, _ = ask(four_gpus(per_client=1), "a", 1)
    assert ask(capped, "b")[1] == Decision("b", reason="client_cap", detail="max_jobs_per_client")


def test_the_head_starts_when_slots_free_and_nothing_overtakes_it() -> None:
    s, _ = ask(four_gpus(), "a", 3)
    s, _ = ask(s, "head", 2, client="d")
    s, small = ask(s, "small", 1, client="e")
    assert small.queued  # one slot is free, but the head waits for two: no overtaking
    s, started = s.release("a", now=10.0)
    assert started == ("head", "small")
    assert s.slots.cuda_visible_devices("head") == "0,1" and s.queue.length == 0


def test_a_later_job_that_fits_passes_the_head_at_most_bypass_limit_times() -> None:
    s, _ = ask(four_gpus(bypass=2), "a", 3)
    s, _ = ask(s, "head", 2, client="d")
    s, small = ask(s, "small", 1, client="e")  # one slot free, the head needs two: small passes it
    assert small.placed and s.queue.entries[0].bypassed == 1 and s.status() == "reserved"
    s, _ = s.release("small", now=1.0)
    s, queued = ask(s, "q1", 3, client="f")  # does not fit either: queued behind the head
    s, other = ask(s, "small2", 1, client="e")  # passes both waiting jobs
    assert queued.queue_position == 2 and other.placed
    assert [e.bypassed for e in s.queue.entries] == [2, 1] and s.holds_free_slots is False
    s, _ = s.release("small2", now=2.0)
    assert s.holds_free_slots and s.status() == "reserved" and s.slot_states()[3] == "held"
    assert not s.may_place(1) and ask(s, "small3", 1, client="e", queue=False)[1].reason == "busy"
    s, started = s.release("a", now=3.0)
    assert started == ("head",)  # q1 needs 3, 2 are left: it waits, and it may still be passed once
    assert s.queue.entries[0].bypassed == 1 and not s.holds_free_slots and s.may_place(2)


def test_a_queued_job_behind_the_head_starts_first_when_only_it_fits() -> None:
    s, _ = ask(four_gpus(bypass=1), "a", 4)
    s, _ = ask(s, "head", 3, client="d")
    s, _ = ask(s, "small", 1, client="e")
    s, _ = ask(s, "b", 1, client="f")  # cannot be placed: every slot is taken, so it queues third
    s, started = s.release("a", now=1.0)
    assert started == ("head", "small")  # all four free: the head first, then the next in order
    s, _ = ask(four_gpus(bypass=1), "x", 3)
    s, _ = ask(s, "big", 2, client="d")
    s, _ = ask(s, "little", 1, client="e")  # placed at once (passes big once)
    s, started = s.release("little", now=1.0)
    assert started == () and s.holds_free_slots  # big was passed once: the slot is kept for it


def test_positions_move_and_leases_expire() -> None:
    s, _ = ask(four_gpus(), "a", 4)
    s, _ = ask(s, "q1", client="d")
    s, _ = ask(s, "q2", client="e", now=30.0)
    assert [(j, p) for j, p, _ in s.positions(30.0)] == [("q1", 1), ("q2", 2)]
    s, expired = s.expire(60.0, 60.0)
    assert expired == ("q1",)
    assert [(j, p) for j, p, _ in s.positions(60.0)] == [("q2", 1)]


class SlotsAndQueue(RuleBasedStateMachine):
    """Never more running jobs than slots, a GPU never in two jobs, one decision per request, FIFO order."""

    def __init__(self) -> None:
        super().__init__()
        self.s = Scheduler(SlotTable.of(tuple(Slot(i, (i,)) for i in range(4))), JobQueue(3, 2))
        self.now = 0.0
        self.counter = 0
        self.gpus: dict[str, int] = {}
        self.decisions: dict[str, Decision] = {}
        self.queued_order: list[str] = []
        self.ended: set[str] = set()

    @rule(gpus=st.integers(1, 5), client=st.sampled_from("xyz"), queue=st.booleans())
    def request(self, gpus: int, client: str, queue: bool) -> None:
        self.counter += 1
        job = f"j{self.counter}"
        self.s, decision = self.s.request(
            job, client, gpus, may_queue=queue, estimated_minutes=1.0, now=self.now
        )
        assert job not in self.decisions
        self.decisions[job] = decision
        self.gpus[job] = gpus
        assert decision.placed + decision.queued + (decision.reason is not None) == 1
        if decision.queued:
            self.queued_order.append(job)

    @precondition(lambda self: bool(self.s.held))
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from([h.job_id for h in self.s.held]))
        self.now += 1.0
        self.s, started = self.s.release(job, self.now)
        self.ended.add(job)
        assert list(started) == self.queued_order[: len(started)]  # heads, in order
        del self.queued_order[: len(started)]

    @precondition(lambda self: bool(self.queued_order))
    @rule(data=st.data())
    def cancel_queued(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self.queued_order))
        self.s, started = self.s.release(job, self.now)
        self.queued_order.remove(job)
        self.ended.add(job)
        del self.queued_order[: len(started)]

    @rule(seconds=st.floats(0, 90))
    def wait_and_expire(self, seconds: float) -> None:
        self.now += seconds
        self.s, expired = self.s.expire(self.now, 60.0)
        for job in expired:
            self.queued_order.remove(job)
            self.ended.add(job)

    @invariant()
    def slots_are_exclusive_and_whole(self) -> None:
        held = [h.job_id for h in self.s.held]
        assert len(held) == len(set(held)) <= self.s.slots.total
        holders = [h.job_id for h in self.s.slots.holders if h is not None]
        assert sorted(set(holders)) == sorted(held)
        for job in held:
            assert len(self.s.slots.slots_of(job)) == self.gpus[job]

    @invariant()
    def queue_is_fifo_and_within_caps(self) -> None:
        assert [e.job_id for e in self.s.queue.entries] == self.queued_order
        assert self.s.queue.length <= self.s.queue.capacity
        for client in "xyz":
            mine = sum(e.client_id == client for e in self.s.queue.entries) + sum(
                h.client_id == client for h in self.s.held
            )
            assert mine <= self.s.queue.max_per_client

    def teardown(self) -> None:
        """Every queued entry eventually gets slots, expires or is cancelled: finishing everything drains it."""
        while self.s.held:
            self.s, _ = self.s.release(self.s.held[0].job_id, self.now)
        assert self.s.queue.length == 0 and not self.s.held


TestSlotsAndQueue = SlotsAndQueue.TestCase
TestSlotsAndQueue.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
