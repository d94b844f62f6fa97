"""The client core against an independently written reference model, step by random step.

Workers answer at random: accept now, refuse, or accept into their queue (issue 12) with a position and an
estimated start; a queued winner's lease must be renewed (`job_sync`) every `queue_keepalive` seconds.

The model is a plain record of what a client must have done: who was asked, who answered, who must have won,
which events must have reached the user. After every step the core's state, its output and its own
`validate_state()` are checked against it.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from support.client_core import (
    JOB,
    KEY,
    TIMEOUTS,
    complete,
    new_core,
    new_queue_core,
    queued,
    queued_status,
    status,
)

from fsm_worker.protocol.client import ClientJobState, Outcome
from fsm_worker.protocol.client.errors import AllRejectedError, WorkerGoneError
from fsm_worker.protocol.client.events import (
    Abandoned,
    BiddingOpened,
    Deliver,
    Event,
    Fail,
    Instruction,
    MessageReceived,
    QueueUpdate,
    Reconnected,
    Send,
    SendReported,
    TimerFired,
    WorkerChosen,
)
from fsm_worker.protocol.messages import (
    JobAssignment,
    JobCancel,
    JobEvent,
    JobHead,
    JobResponse,
    JobStatus,
    JobSync,
)

WORKERS = ("w0", "w1", "w2", "w3")


class ClientModel(RuleBasedStateMachine):
    """Random bids, losers, expiries, duplicates, replays, reconnects and clock advances."""

    @initialize(
        count=st.sampled_from([1, 2, 3, 4, 4, 3]),
        window=st.sampled_from([0.0, 2.0, 8.0]),
        queue=st.booleans(),
    )
    def open_bidding(self, count: int, window: float, queue: bool) -> None:
        self.core = new_queue_core() if queue else new_core()
        self.now = 0.0
        self.candidates = WORKERS[:count]
        self.window = window
        self.answered: set[str] = set()
        self.accepted: dict[str, float] = {}  # in order of acceptance
        self.queue_offers: dict[str, tuple[float, int]] = {}  # in order of answer: (start, position)
        self.queued = False  # the winner holds the job in its queue
        self.synced_at = 0.0  # when the winner was last sent job_sync (the queue lease renewed)
        self.left_queue = False  # a numbered event other than "queued" was delivered
        self.reports: list[JobStatus] = []  # unnumbered queue reports handed to the user
        self.window_ends: float | None = None
        self.phase = "bidding"
        self.winner: str | None = None
        self.sent: list[Send] = []
        self.last_upto = 0  # the highest `upto_seq` the client asked for
        self.delivered: list[JobEvent] = []
        self.worker_events: list[JobEvent] = []  # what the winner has produced, seq = index + 1
        self.refused_since: float | None = None
        self.heard_at = 0.0
        self.head_pending_since: float | None = None  # the first bounded sync since the last job_head
        out = self.step(BiddingOpened(self.candidates, window))
        assert out == [Send(worker, self.core.request) for worker in self.candidates]

    # --- the reference --------------------------------------------------------------------------------------

    def step(self, event: Event) -> list[Instruction]:
        held = {e.seq for e in self.delivered} | set(self.core._early)
        out = self.core.handle(event, self.now)
        for send in out:  # a bounded sync never asks for an event the client holds
            if (
                isinstance(send, Send)
                and isinstance(send.message, JobSync)
                and send.message.upto_seq is not None
            ):
                asked = set(range(send.message.after_seq + 1, send.message.upto_seq + 1))
                assert not asked & held, (asked, held)
                self.last_upto = max(self.last_upto, send.message.upto_seq)
                if self.head_pending_since is None:
                    self.head_pending_since = self.now
            elif isinstance(send, Send) and isinstance(send.message, JobSync) and send.to == self.winner:
                # a full replay: no job_head came in time (or the worker never sends one)
                assert send.message.after_seq == len(self.delivered), "it asks from the last delivered event"
                assert self.core.legacy_sync or self.now >= (self.head_pending_since or 0) + TIMEOUTS.head
                self.head_pending_since = None
        self.sent += [i for i in out if isinstance(i, Send)]
        for instruction in out:
            if isinstance(instruction, WorkerChosen):
                assert self.phase == "bidding" and instruction.worker == self.expected_winner()
                self.phase, self.winner, self.heard_at = "assigned", instruction.worker, self.now
                assert instruction.queued == (not self.accepted), (
                    "a queue entry wins only with no offer to run now"
                )
                if instruction.queued:
                    self.queued, self.synced_at = True, self.now
            is_sync = isinstance(instruction, Send) and isinstance(instruction.message, JobSync)
            if is_sync and instruction.to == self.winner:  # type: ignore[union-attr]
                self.synced_at = self.now
            if isinstance(instruction, Deliver):
                self.delivered.append(instruction.event)
                in_queue = isinstance(instruction.event, JobStatus) and instruction.event.status == "queued"
                if in_queue and not self.queued:
                    self.synced_at = self.now
                self.queued = in_queue
                self.left_queue = self.left_queue or not in_queue
            if isinstance(instruction, QueueUpdate):
                if not self.queued:
                    self.synced_at = self.now
                self.queued = True
                self.reports.append(instruction.status)
            if isinstance(instruction, Fail):
                self.check_failure(instruction)
                self.phase = "failed"
        if self.queued and self.core.state is ClientJobState.ASSIGNED:
            assert self.now < self.synced_at + TIMEOUTS.queue_keepalive, (
                "the queue lease is never left to lapse"
            )
        return out

    def expected_winner(self) -> str | None:
        if not self.accepted:
            if not self.queue_offers:
                return None
            first = min(self.queue_offers.values())  # earliest start, then lower position
            return next(worker for worker, offer in self.queue_offers.items() if offer == first)
        best = min(self.accepted.values())
        return next(worker for worker, estimate in self.accepted.items() if estimate == best)

    def check_failure(self, fail: Fail) -> None:
        if self.phase == "bidding":
            assert isinstance(fail.error, AllRejectedError) and not self.accepted and not self.queue_offers
            assert set(fail.error.reasons) == set(self.candidates)
        else:
            assert isinstance(fail.error, WorkerGoneError)
            assert self.refused_since is not None and self.now - self.refused_since >= TIMEOUTS.worker_gone

    # --- rules ---------------------------------------------------------------------------------------------

    @rule(dt=st.sampled_from([0.5, 1.0, 2.5, 5.0, 9.0]))
    def advance_clock(self, dt: float) -> None:
        self.now += dt
        must_close = self.phase == "bidding" and self.bidding_due()
        pending = self.head_pending_since
        replay_due = pending is not None and self.now >= pending + TIMEOUTS.head
        if replay_due and self.refused_since is not None:
            self.head_pending_since = None  # the sync may never have reached the worker: no head expected
        # before the step: the renewing `job_sync` itself moves `synced_at`
        renew = self.queued and self.now >= self.synced_at + TIMEOUTS.queue_keepalive
        out = self.step(TimerFired())
        assert not must_close or self.phase != "bidding", (
            "the bid window or response timeout closes the bidding"
        )
        if self.phase == "assigned" and self.core.state is ClientJobState.ASSIGNED:
            probes = [s for s in out if isinstance(s, Send) and isinstance(s.message, JobSync)]
            due = self.now >= self.heard_at + TIMEOUTS.liveness
            replay = replay_due and self.refused_since is None
            assert len(probes) == int(due or renew or replay), (
                "a silent worker is probed, a queue lease renewed"
            )
            if replay or (
                due and self.core.legacy_sync
            ):  # no job_head within head_timeout: a full replay, which also probes
                probe = probes[0].message
                assert isinstance(probe, JobSync) and probe.upto_seq is None
                self.heard_at = self.now
            elif due:  # a probe replays nothing: it asks how far the job goes
                probe = probes[0].message
                assert isinstance(probe, JobSync) and probe.upto_seq == probe.after_seq >= len(self.delivered)
                self.heard_at = self.now  # the next probe is one liveness period later

    @rule(
        index=st.integers(0, 5),
        kind=st.sampled_from(["accept", "reject", "queued"]),
        estimate=st.sampled_from([1.0, 2.0, 3.0]),
        position=st.integers(1, 3),
    )
    def bid(self, index: int, kind: str, estimate: float, position: int = 1) -> None:
        sender = (*WORKERS, "stranger", "stranger2")[index]
        bidding = self.phase == "bidding"
        closing_by_clock = bidding and self.bidding_due()
        if bidding and not closing_by_clock and sender in self.candidates and sender not in self.answered:
            self.answered.add(sender)
            if kind == "accept":
                self.accepted[sender] = estimate
            if kind == "queued":
                self.queue_offers[sender] = (estimate * 10, position)
            if kind != "reject" and self.window_ends is None and (kind == "accept" or self.window > 0):
                self.window_ends = self.now + self.window
        if kind == "queued":
            response = queued(position, estimate * 10)
        else:
            response = JobResponse(JOB, kind == "accept", estimated_duration_minutes=estimate, reason="no")
        self.step(MessageReceived(sender, response))
        if (
            bidding and self.phase == "bidding"
        ):  # the core must still be waiting: nothing forces a decision yet
            assert not closing_by_clock
            assert self.answered != set(self.candidates)
            assert not (self.accepted and self.window == 0.0)

    @rule(data=st.data())
    def several_accept_in_one_window(self, data: st.DataObject) -> None:
        """Every unanswered candidate accepts at once, in a random order, with distinct or tied estimates."""
        waiting = [worker for worker in self.candidates if worker not in self.answered]
        order = data.draw(st.permutations(waiting))
        for worker in order:
            estimate = data.draw(st.sampled_from([1.0, 2.0, 3.0]))
            index = WORKERS.index(worker)
            kind = data.draw(st.sampled_from(["accept", "queued"]))
            self.bid(index, kind, estimate, data.draw(st.integers(1, 3)))

    @rule(gap=st.sampled_from([0.0, 0.5]))
    def refused_until_exactly_worker_gone(self, gap: float) -> None:
        """The winner stays unreachable up to the worker_gone boundary, and a step past it."""
        if self.phase != "assigned" or self.core.state is not ClientJobState.ASSIGNED:
            return
        self.a_send_is_reported(refused=True)
        assert self.refused_since is not None
        self.now = max(self.now, self.refused_since + TIMEOUTS.worker_gone + gap)
        self.a_send_is_reported(refused=True)
        assert self.phase == "failed", "a worker refused for worker_gone is declared gone"

    def bidding_due(self) -> bool:
        ends = [TIMEOUTS.response, *([self.window_ends] if self.window_ends is not None else [])]
        return self.now >= min(ends)

    @rule(pick=st.integers(0, 8), terminal=st.booleans())
    def worker_sends_an_event(self, pick: int, terminal: bool) -> None:
        """A new event, a duplicate, a replay or one that jumps ahead (a gap)."""
        if self.phase != "assigned":  # nobody holds the job: any event is ignored
            before = len(self.delivered)
            self.step(MessageReceived(self.candidates[0], status(1)))
            assert len(self.delivered) == before
            return
        produced = len(self.worker_events)
        ended = bool(self.worker_events) and not isinstance(self.worker_events[-1], type(status(1)))
        if pick >= produced and not ended:
            seq = produced + 1
            waiting = all(getattr(e, "status", None) == "queued" for e in self.worker_events)
            if waiting and pick % 2 == 0:  # still in the worker's queue: its position moves
                self.worker_events.append(queued_status(seq, max(4 - seq, 1), 10.0))
            else:
                self.worker_events.append(complete(seq) if terminal and pick % 3 == 0 else status(seq))
        if not self.worker_events:
            return
        event = self.worker_events[min(pick, len(self.worker_events) - 1)]
        assert self.winner is not None
        self.heard_at = self.now
        self.refused_since = None
        self.step(MessageReceived(self.winner, event))

    @rule(position=st.integers(1, 4), from_winner=st.booleans())
    def worker_reports_the_queue_place(self, position: int, from_winner: bool) -> None:
        """An unnumbered `job_status queued` (a place report, or the reply to a keep-alive `job_sync`)."""
        sender = self.winner if from_winner and self.winner is not None else "stranger"
        report = JobStatus(
            JOB, "queued", 0.0, "in line", queue_position=position, estimated_start_seconds=5.0
        )
        following = self.core.state is ClientJobState.ASSIGNED
        before = (len(self.delivered), self.core.last_seq)
        if following and sender == self.winner:
            self.head_pending_since = None
        out = self.step(MessageReceived(sender, report))
        updates = [i for i in out if isinstance(i, QueueUpdate)]
        applies = following and sender == self.winner and not self.left_queue
        assert updates == ([QueueUpdate(report)] if applies else [])
        assert (len(self.delivered), self.core.last_seq) == before, "a place report is not a numbered event"
        if applies:
            assert self.core.queue_position == position
        if following and sender == self.winner:  # heard from, even when the report is stale
            self.heard_at, self.refused_since = self.now, None
            self.head_pending_since = None  # the queue report answers a keep-alive

    @rule(refused=st.booleans())
    def a_send_is_reported(self, refused: bool) -> None:
        if self.winner is None:
            self.step(SendReported(self.candidates[0], JobSync(JOB, 0), refused=refused))
            return
        if refused and self.refused_since is None:
            self.refused_since = self.now
        elif not refused:
            self.refused_since = None
        following = self.core.state is ClientJobState.ASSIGNED
        self.step(SendReported(self.winner, JobSync(JOB, 0, job_key=KEY), refused=refused))
        since = self.refused_since
        if following and refused and since is not None and self.now - since >= TIMEOUTS.worker_gone:
            assert self.phase == "failed", "a worker unreachable for worker_gone is declared gone"

    @rule()
    def reconnect(self) -> None:
        out = self.step(Reconnected())
        syncs = [s.message for s in out if isinstance(s, Send) and isinstance(s.message, JobSync)]
        if self.phase == "assigned" and self.core.state is ClientJobState.ASSIGNED:
            assert syncs and syncs[-1].after_seq >= len(self.delivered)
            if self.core.legacy_sync:
                assert syncs[-1].upto_seq is None
            else:
                assert syncs[-1].upto_seq == syncs[-1].after_seq

    @rule()
    def worker_answers_the_latest_sync(self) -> None:
        """The worker's `job_head` after the latest bounded sync: what the client then asks for is lost."""
        if self.winner is None or self.core.state is not ClientJobState.ASSIGNED:
            return
        self.heard_at = self.now
        self.refused_since = None
        self.head_pending_since = None
        self.step(MessageReceived(self.winner, JobHead(JOB, len(self.worker_events), self.last_upto)))

    @rule()
    def abandon(self) -> None:
        applies = self.phase in ("bidding", "assigned") and not self.core.finished
        self.step(Abandoned())
        if applies and self.phase in ("bidding", "assigned"):
            self.phase = "abandoned"

    # --- invariants ----------------------------------------------------------------------------------------

    @invariant()
    def core_is_consistent(self) -> None:
        self.core.validate_state()

    @invariant()
    def events_reach_the_user_in_order_exactly_once(self) -> None:
        assert [event.seq for event in self.delivered] == list(range(1, len(self.delivered) + 1))
        assert self.delivered == self.worker_events[: len(self.delivered)]
        assert self.core.history == self.delivered

    @invariant()
    def no_loser_stays_reserved(self) -> None:
        if self.phase in ("bidding",):
            return
        cancelled = {
            s.to for s in self.sent if isinstance(s.message, JobCancel) and s.message.job_key is None
        }
        for worker in [*self.accepted, *self.queue_offers]:
            if worker != self.winner:
                assert worker in cancelled, f"{worker} accepted and was not released (one entry per job)"

    @invariant()
    def only_the_winner_learns_the_key(self) -> None:
        for send in self.sent:
            if getattr(send.message, "job_key", None) is not None:
                assert send.to == self.winner
        assignments = [s for s in self.sent if isinstance(s.message, JobAssignment)]
        assert len(assignments) == (0 if self.winner is None else 1)

    @invariant()
    def state_matches_the_model(self) -> None:
        expected = {
            "bidding": {ClientJobState.BIDDING},
            "assigned": {ClientJobState.ASSIGNED, ClientJobState.FINISHED},
            "failed": {ClientJobState.FAILED},
            "abandoned": {ClientJobState.ABANDONED, ClientJobState.FINISHED},
        }[self.phase]
        assert self.core.state in expected
        if self.core.state is ClientJobState.ASSIGNED:
            assert self.core.queued == self.queued
        finished = bool(self.delivered) and not isinstance(self.delivered[-1], type(status(1)))
        assert (self.core.state is ClientJobState.FINISHED) == finished
        if finished:
            assert self.core.outcome is Outcome.COMPLETED


ClientModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestClientModel = ClientModel.TestCase


def test_a_lease_renewal_while_the_worker_is_heard_is_one_sync() -> None:
    """Found by the model: heads keep the worker heard from, so only the queue lease is due at t=8."""
    model = ClientModel()
    model.open_bidding(count=2, window=0.0, queue=False)
    model.bid(0, "accept", 1.0)
    model.bid(1, "accept", 1.0)
    model.worker_sends_an_event(pick=0, terminal=False)  # a numbered "queued": the lease starts at t=0
    assert model.queued and model.core.queued
    for dt in (0.5, 0.5, 0.5, 0.5, 1.0, 2.5):
        model.advance_clock(dt)
        model.worker_answers_the_latest_sync()  # heard from: no liveness probe is due
    assert model.now == 5.5
    before = len(model.sent)
    model.advance_clock(2.5)  # t=8.0: the lease alone is due
    syncs = [(s.to, s.message) for s in model.sent[before:] if isinstance(s.message, JobSync)]
    assert len(syncs) == 1
    to, sync = syncs[0]
    assert to == "w0" and sync.upto_seq == sync.after_seq == 1
    assert model.synced_at == 8.0
