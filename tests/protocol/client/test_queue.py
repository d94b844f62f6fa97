"""The client core's side of the worker queue (issue 12): queued offers, the pick, the lease, the position."""

from __future__ import annotations

from support.client_core import (
    JOB,
    KEY,
    TIMEOUTS,
    accept,
    complete,
    new_queue_core,
    queued,
    queued_status,
    reject,
    status,
)

from fsm_worker.protocol.client import ClientJobCore, ClientJobState, Outcome
from fsm_worker.protocol.client.errors import AllRejectedError, JobFailedError, WorkerGoneError
from fsm_worker.protocol.client.events import (
    Abandoned,
    Attached,
    BiddingOpened,
    Deliver,
    Fail,
    MessageReceived,
    QueueUpdate,
    Send,
    SendReported,
    TimerFired,
    WorkerChosen,
)
from fsm_worker.protocol.messages import (
    AppError,
    JobAssignment,
    JobCancel,
    JobError,
    JobFailed,
    JobHead,
    JobStatus,
    JobSync,
    to_wire,
)


def queued_core(position: int = 2, start: float | None = 30.0) -> ClientJobCore:
    core = new_queue_core()
    core.handle(BiddingOpened(("w1",)), 0.0)
    out = core.handle(MessageReceived("w1", queued(position, start)), 0.0)
    assert out[-1] == WorkerChosen("w1", True, position, start)
    core.validate_state()
    return core


def test_the_request_asks_to_queue_and_names_its_gpus_on_the_wire() -> None:
    core = new_queue_core(gpus=2)
    wire = to_wire(core.request)
    assert wire["queue"] is True and wire["requirements"]["gpus"] == 2


def test_an_offer_to_run_now_beats_queued_offers_and_those_are_released() -> None:
    core = new_queue_core()
    core.handle(BiddingOpened(("w1", "w2", "w3")), 0.0)
    assert core.handle(MessageReceived("w1", queued(1, 5.0)), 0.1) == []  # a queued offer waits for the rest
    out = core.handle(MessageReceived("w2", accept(9.0)), 0.2)
    assert out == [
        Send("w1", JobCancel(JOB)),
        Send("w3", JobCancel(JOB)),
        Send("w2", JobAssignment(JOB, job_key=KEY)),
        WorkerChosen("w2"),
    ]
    assert not core.queued and core.next_deadline() == 0.2 + TIMEOUTS.liveness
    core.validate_state()


def test_among_queued_offers_the_earliest_estimated_start_wins_once_all_answered() -> None:
    core = new_queue_core()
    core.handle(BiddingOpened(("w1", "w2", "w3")), 0.0)
    assert core.handle(MessageReceived("w1", queued(1, 40.0)), 0.1) == []
    assert core.handle(MessageReceived("w2", queued(3, 12.0)), 0.2) == []
    out = core.handle(MessageReceived("w3", reject("queue_full")), 0.3)
    assert out == [
        Send("w1", JobCancel(JOB)),
        Send("w2", JobAssignment(JOB, job_key=KEY)),
        WorkerChosen("w2", True, 3, 12.0),
    ]
    assert core.queued and core.queue_position == 3 and core.estimated_start_seconds == 12.0
    core.validate_state()


def test_ties_go_to_the_lower_position_then_the_first_to_answer_and_unknown_starts_come_last() -> None:
    core = new_queue_core()
    core.handle(BiddingOpened(("w1", "w2", "w3", "w4")), 0.0)
    core.handle(MessageReceived("w1", queued(1, None)), 0.1)
    core.handle(MessageReceived("w2", queued(4, 20.0)), 0.2)
    core.handle(MessageReceived("w3", queued(2, 20.0)), 0.3)
    out = core.handle(MessageReceived("w4", queued(2, 20.0)), 0.4)
    assert out[-1] == WorkerChosen("w3", True, 2, 20.0)
    assert sorted(s.to for s in out if isinstance(s, Send) and isinstance(s.message, JobCancel)) == [
        "w1",
        "w2",
        "w4",
    ]


def test_a_silent_candidate_does_not_keep_the_queued_offers_waiting_past_the_response_timeout() -> None:
    core = new_queue_core()
    core.handle(BiddingOpened(("w1", "w2")), 0.0)
    core.handle(MessageReceived("w1", queued(1, 3.0)), 0.5)
    assert core.next_deadline() == TIMEOUTS.response
    out = core.handle(TimerFired(), TIMEOUTS.response)
    assert out == [
        Send("w2", JobCancel(JOB)),  # it may still answer: its entry must not stay
        Send("w1", JobAssignment(JOB, job_key=KEY)),
        WorkerChosen("w1", True, 1, 3.0),
    ]


def test_with_a_bid_window_a_queued_offer_opens_it() -> None:
    core = new_queue_core()
    core.handle(BiddingOpened(("w1", "w2"), bid_window=2.0), 0.0)
    core.handle(MessageReceived("w1", queued(1, 3.0)), 1.0)
    assert core.next_deadline() == 3.0
    out = core.handle(TimerFired(), 3.0)
    assert out[-1] == WorkerChosen("w1", True, 1, 3.0)


def test_every_refusal_reason_is_named_when_no_worker_queues_it() -> None:
    core = new_queue_core()
    core.handle(BiddingOpened(("w1", "w2", "w3")), 0.0)
    core.handle(MessageReceived("w1", reject("queue_full")), 0.1)
    core.handle(MessageReceived("w2", reject("client_cap")), 0.2)
    out = core.handle(MessageReceived("w3", reject("incompatible")), 0.3)
    assert len(out) == 1 and isinstance(out[0], Fail) and isinstance(out[0].error, AllRejectedError)
    assert {w: r for w, (r, _) in out[0].error.reasons.items()} == {
        "w1": "queue_full",
        "w2": "client_cap",
        "w3": "incompatible",
    }


def test_the_queue_lease_is_kept_alive_even_while_the_worker_keeps_talking() -> None:
    """A probe replays nothing (`upto_seq == after_seq`, answered by `job_head`); while queued it also renews the lease."""
    core = queued_core()
    sync = JobSync(JOB, 0, job_key=KEY, upto_seq=0)
    assert core.next_deadline() == TIMEOUTS.liveness  # 5 s: the first probe also renews the lease
    assert core.handle(TimerFired(), 5.0) == [Send("w1", sync)]
    assert core.next_deadline() == 10.0
    # the worker reports position changes more often than the liveness period: no probe is needed, but
    # the lease must still be renewed every queue_keepalive seconds
    assert core.handle(MessageReceived("w1", queued_status(1, 1, 8.0)), 9.0) == [
        Deliver(queued_status(1, 1, 8.0))
    ]
    assert core.next_deadline() == 5.0 + TIMEOUTS.queue_keepalive  # 13 s: before the probe (14 s)
    assert core.handle(TimerFired(), 13.0) == [Send("w1", JobSync(JOB, 1, job_key=KEY, upto_seq=1))]
    assert core.handle(MessageReceived("w1", status(2)), 14.0) == [Deliver(status(2))]
    assert core.handle(MessageReceived("w1", JobHead(JOB, 2, 1)), 14.0) == []  # the probes' answer
    assert not core.queued and core.queue_position is None
    assert core.next_deadline() == 14.0 + TIMEOUTS.liveness  # running: only the liveness probe is left
    core.validate_state()


def test_a_chatty_worker_still_gets_the_keepalive() -> None:
    core = queued_core()
    for seq, now in enumerate((3.0, 6.0, 9.0, 12.0), start=1):
        out = core.handle(MessageReceived("w1", queued_status(seq, 5 - seq)), now)
        syncs = [i for i in out if isinstance(i, Send)]
        # due deadlines fire before the event is applied: the renewal asks after the events already held
        expected = [Send("w1", JobSync(JOB, seq - 1, job_key=KEY, upto_seq=seq - 1))] if seq == 3 else []
        assert syncs == expected
    assert core.queue_position == 1
    core.validate_state()


def test_the_position_follows_the_queued_statuses() -> None:
    core = queued_core(position=3, start=60.0)
    core.handle(MessageReceived("w1", queued_status(1, 2, 30.0)), 1.0)
    assert (core.queue_position, core.estimated_start_seconds) == (2, 30.0)
    core.handle(MessageReceived("w1", queued_status(2, 1, None)), 2.0)
    assert (core.queue_position, core.estimated_start_seconds) == (1, None)
    core.handle(MessageReceived("w1", complete(3)), 3.0)
    assert not core.queued and core.outcome is Outcome.COMPLETED and core.next_deadline() is None
    core.validate_state()


def test_a_worker_gone_while_queued_says_so() -> None:
    core = queued_core(position=4)
    probe = JobSync(JOB, 0, job_key=KEY)
    core.handle(SendReported("w1", probe, refused=True, code="PEER_NOT_FOUND"), 5.0)
    gone_at = 5.0 + TIMEOUTS.worker_gone
    out = core.handle(SendReported("w1", probe, refused=True, code="PEER_NOT_FOUND"), gone_at)
    assert isinstance(out[-1], Fail) and isinstance(out[-1].error, WorkerGoneError)
    text = str(out[-1].error)
    assert "waiting in its queue at position 4" in text and "never started" in text
    assert core.outcome is Outcome.LOST and core.next_deadline() is None
    core.validate_state()


def test_a_queue_entry_the_worker_forgot_fails_with_the_queued_note() -> None:
    core = queued_core()
    out = core.handle(MessageReceived("w1", AppError("UNKNOWN_JOB", "no such job", JOB)), 1.0)
    assert isinstance(out[0], Fail) and "waiting in its queue" in str(out[0].error)


def test_abandoning_while_bidding_releases_queued_offers_and_while_queued_cancels_with_the_key() -> None:
    core = new_queue_core()
    core.handle(BiddingOpened(("w1", "w2")), 0.0)
    core.handle(MessageReceived("w1", queued(1, 1.0)), 0.1)
    assert core.handle(Abandoned(), 0.2) == [Send("w1", JobCancel(JOB)), Send("w2", JobCancel(JOB))]
    core = queued_core()
    assert core.handle(Abandoned(), 1.0) == [Send("w1", JobCancel(JOB, job_key=KEY))]
    assert core.state is ClientJobState.ABANDONED and core.next_deadline() is None
    core.validate_state()


def place(position: int, start: float | None = None) -> JobStatus:
    """The worker's report of a queued job's place: `job_status queued` without a seq (it may repeat)."""
    return JobStatus(
        JOB, "queued", 0.0, f"queued: {position}", queue_position=position, estimated_start_seconds=start
    )


def test_unnumbered_queue_reports_move_the_position_and_reach_the_user_outside_the_history() -> None:
    core = queued_core(position=3, start=60.0)
    assert core.handle(MessageReceived("w1", place(2, 30.0)), 1.0) == [QueueUpdate(place(2, 30.0))]
    assert core.handle(MessageReceived("w1", place(2, 30.0)), 1.5) == [
        QueueUpdate(place(2, 30.0))
    ]  # a repeat
    assert (core.queue_position, core.estimated_start_seconds) == (2, 30.0)
    assert core.history == [] and core.last_seq == 0
    assert core.handle(MessageReceived("mallory", place(1)), 2.0) == []  # only the job's worker places it
    assert core.handle(MessageReceived("w1", status(1)), 3.0) == [Deliver(status(1))]
    assert not core.queued
    assert core.handle(MessageReceived("w1", place(1)), 4.0) == [], (
        "a stale report after the start is ignored"
    )
    assert not core.queued
    core.validate_state()


def test_a_queue_report_in_reply_to_a_keepalive_counts_as_hearing_from_the_worker() -> None:
    core = queued_core()
    assert core.handle(TimerFired(), 5.0) == [Send("w1", JobSync(JOB, 0, job_key=KEY, upto_seq=0))]
    core.handle(MessageReceived("w1", place(2, 10.0)), 5.1)
    assert core.next_deadline() == 5.1 + TIMEOUTS.liveness  # heard from: the probe moves, the lease is 13 s
    assert core.handle(TimerFired(), 10.1) == [Send("w1", JobSync(JOB, 0, job_key=KEY, upto_seq=0))]
    assert core.next_deadline() == 10.1 + TIMEOUTS.liveness  # that sync renewed the lease too (to 18.1 s)
    core.validate_state()


def test_an_attached_client_learns_from_the_reports_that_its_job_is_queued() -> None:
    core = new_queue_core()
    core.handle(Attached("w1"), 0.0)
    assert not core.queued and core.next_deadline() == TIMEOUTS.liveness
    assert core.handle(MessageReceived("w1", place(4)), 0.2) == [QueueUpdate(place(4))]
    assert (
        core.queued and core.next_deadline() == 0.2 + TIMEOUTS.liveness
    )  # the probe, then the lease (8.2 s)
    core.validate_state()


def test_a_queue_entry_that_fails_without_a_seq_fails_the_job_with_the_workers_code() -> None:
    core = queued_core(position=2)
    lapsed = JobFailed(JOB, JobError("QUEUE_LEASE_EXPIRED", "no job_sync for 60 s", True))
    out = core.handle(MessageReceived("w1", lapsed), 1.0)
    assert len(out) == 1 and isinstance(out[0], Fail) and isinstance(out[0].error, JobFailedError)
    assert out[0].error.code == "QUEUE_LEASE_EXPIRED" and "waiting in its queue at position 2" in str(
        out[0].error
    )
    assert core.outcome is Outcome.LOST and core.next_deadline() is None
    core.validate_state()
