"""The client core, one scenario at a time, with the exact instructions it answers."""

from __future__ import annotations

import hashlib

from support.client_core import (
    JOB,
    KEY,
    TIMEOUTS,
    accept,
    cancelled,
    complete,
    failed,
    new_core,
    reject,
    status,
)

from fsm_worker.protocol.client import ClientJobState, Outcome
from fsm_worker.protocol.client.errors import AllRejectedError, WorkerGoneError
from fsm_worker.protocol.client.events import (
    Abandoned,
    Attached,
    BiddingOpened,
    CancelRequested,
    ChannelLost,
    ControlReply,
    Deliver,
    Fail,
    MessageReceived,
    OfferReady,
    Reconnected,
    Refused,
    Send,
    SendReported,
    StopRequested,
    TimerFired,
    WorkerChosen,
)
from fsm_worker.protocol.messages import (
    AppError,
    JobAssignment,
    JobCancel,
    JobHead,
    JobStop,
    JobSync,
    Metrics,
    RtcAnswer,
    RtcOffer,
)


def assigned_core(worker: str = "w1"):  # type: ignore[no-untyped-def]
    core = new_core()
    core.handle(BiddingOpened((worker,)), 0.0)
    core.handle(MessageReceived(worker, accept()), 0.0)
    assert core.state is ClientJobState.ASSIGNED
    return core


def test_the_request_carries_only_the_hash_of_the_job_key() -> None:
    core = new_core()
    out = core.handle(BiddingOpened(("w1", "w2")), 0.0)
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    assert core.request.job_key_sha256 == digest
    assert out == [Send("w1", core.request), Send("w2", core.request)]
    assert KEY not in repr(core.request)


def test_first_acceptance_wins_and_every_other_candidate_is_released() -> None:
    core = new_core()
    core.handle(BiddingOpened(("w1", "w2", "w3")), 0.0)
    assert core.handle(MessageReceived("w2", reject()), 1.0) == []
    out = core.handle(MessageReceived("w3", accept(7.0)), 2.0)
    assert out == [
        Send("w1", JobCancel(JOB)),
        Send("w3", JobAssignment(JOB, job_key=KEY)),
        WorkerChosen("w3"),
    ]
    assert core.worker == "w3" and core.state is ClientJobState.ASSIGNED


def test_with_a_bid_window_the_lowest_estimate_wins_when_the_window_ends() -> None:
    core = new_core()
    core.handle(BiddingOpened(("w1", "w2", "w3"), bid_window=2.0), 0.0)
    assert core.handle(MessageReceived("w1", accept(9.0)), 1.0) == []
    assert core.next_deadline() == 3.0
    assert core.handle(MessageReceived("w2", accept(3.0)), 2.0) == []
    out = core.handle(TimerFired(), 3.0)
    assert out == [
        Send("w1", JobCancel(JOB)),
        Send("w3", JobCancel(JOB)),
        Send("w2", JobAssignment(JOB, job_key=KEY)),
        WorkerChosen("w2"),
    ]


def test_when_every_candidate_answers_the_window_closes_early() -> None:
    core = new_core()
    core.handle(BiddingOpened(("w1", "w2"), bid_window=5.0), 0.0)
    core.handle(MessageReceived("w1", accept(4.0)), 0.5)
    out = core.handle(MessageReceived("w2", accept(2.0)), 0.6)
    assert out == [
        Send("w1", JobCancel(JOB)),
        Send("w2", JobAssignment(JOB, job_key=KEY)),
        WorkerChosen("w2"),
    ]


def test_all_rejected_names_each_reason_and_releases_the_silent_ones() -> None:
    core = new_core()
    core.handle(BiddingOpened(("w1", "w2")), 0.0)
    core.handle(MessageReceived("w1", reject("no GPU")), 1.0)
    assert core.next_deadline() == TIMEOUTS.response
    out = core.handle(TimerFired(), TIMEOUTS.response)
    assert out[0] == Send("w2", JobCancel(JOB))
    assert isinstance(out[1], Fail) and isinstance(out[1].error, AllRejectedError)
    assert out[1].error.reasons == {
        "w1": ("no GPU", ("x",)),
        "w2": ("no answer", ["no job_response within 10 s"]),
    }
    assert core.state is ClientJobState.FAILED and core.outcome is Outcome.LOST
    assert core.next_deadline() is None


def test_bids_from_strangers_and_repeated_bids_are_ignored() -> None:
    core = new_core()
    core.handle(BiddingOpened(("w1", "w2")), 0.0)
    assert core.handle(MessageReceived("mallory", accept(0.0)), 0.1) == []
    assert core.handle(MessageReceived("w1", reject()), 0.2) == []
    assert core.handle(MessageReceived("w1", accept(0.0)), 0.3) == []
    assert core.state is ClientJobState.BIDDING


def test_events_are_delivered_in_seq_order_exactly_once() -> None:
    core = assigned_core()
    assert core.handle(MessageReceived("w1", status(1)), 1.0) == [Deliver(status(1))]
    assert core.handle(MessageReceived("w1", status(1)), 1.1) == []  # duplicate dropped
    # 3 past a gap is held and only the missing 2 is asked for; 4 follows 3, so nothing more is missing
    assert core.handle(MessageReceived("w1", status(3)), 1.2) == [
        Send("w1", JobSync(JOB, 1, job_key=KEY, upto_seq=2))
    ]
    assert core.handle(MessageReceived("w1", status(4)), 1.3) == []
    assert core.handle(MessageReceived("w1", status(2)), 1.4) == [
        Deliver(status(2)),
        Deliver(status(3)),
        Deliver(status(4)),
    ]
    assert core.handle(MessageReceived("w1", status(3)), 1.5) == []  # duplicate dropped
    assert core.handle(MessageReceived("w1", JobHead(JOB, 4, 2)), 1.55) == []  # nothing lost
    assert core.handle(MessageReceived("w1", complete(5)), 1.6) == [Deliver(complete(5))]
    assert [event.seq for event in core.history] == [1, 2, 3, 4, 5]
    assert core.state is ClientJobState.FINISHED and core.outcome is Outcome.COMPLETED
    assert core.next_deadline() is None


def test_a_probe_replays_nothing_and_its_head_asks_for_exactly_what_was_lost() -> None:
    core = assigned_core()
    core.handle(MessageReceived("w1", status(1)), 1.0)
    probe = JobSync(JOB, 1, job_key=KEY, upto_seq=1)
    assert core.handle(TimerFired(), 6.0) == [Send("w1", probe)]
    assert core.handle(MessageReceived("w1", status(2)), 6.1) == [Deliver(status(2))]  # was on its way
    # The worker (restarted) holds 2..4; 2 arrived, so only 3..4 are asked for, once.
    assert core.handle(MessageReceived("w1", JobHead(JOB, 4, 1)), 6.2) == [
        Send("w1", JobSync(JOB, 2, job_key=KEY, upto_seq=4))
    ]
    assert core.handle(MessageReceived("w1", status(3)), 6.3) == [Deliver(status(3))]
    assert core.handle(MessageReceived("w1", status(4)), 6.3) == [Deliver(status(4))]
    assert core.handle(MessageReceived("w1", JobHead(JOB, 4, 4)), 6.4) == []
    assert core.handle(MessageReceived("w1", status(5)), 6.5) == [Deliver(status(5))]


def test_a_head_answering_an_older_request_waits_for_the_newer_one() -> None:
    core = assigned_core()
    core.handle(MessageReceived("w1", status(1)), 1.0)
    assert core.handle(MessageReceived("w1", status(3)), 1.1) == [
        Send("w1", JobSync(JOB, 1, job_key=KEY, upto_seq=2))
    ]
    assert core.handle(MessageReceived("w1", status(6)), 1.2) == [
        Send("w1", JobSync(JOB, 3, job_key=KEY, upto_seq=5))
    ]
    assert core.handle(MessageReceived("w1", JobHead(JOB, 6, 2)), 1.3) == []  # 2's replay was lost: later
    assert core.handle(MessageReceived("w1", status(4)), 1.35) == []  # held
    out = core.handle(MessageReceived("w1", JobHead(JOB, 6, 5)), 1.4)  # 4 came back, 2 and 5 did not
    assert out == [
        Send("w1", JobSync(JOB, 1, job_key=KEY, upto_seq=2)),
        Send("w1", JobSync(JOB, 4, job_key=KEY, upto_seq=5)),
    ]


def test_an_old_worker_without_job_head_gets_full_replays_after_the_head_timeout() -> None:
    """A worker older than `job_head` ignores `upto_seq`: it replays everything above `after_seq` and sends no
    head. Its events 2..3 were lost (say, across its restart) and the replay of a gap was lost too."""
    core = assigned_core()
    core.handle(MessageReceived("w1", status(1)), 1.0)
    assert core.handle(MessageReceived("w1", status(4)), 1.1) == [
        Send("w1", JobSync(JOB, 1, job_key=KEY, upto_seq=3))
    ]  # its answer never comes; nor does a job_head
    probe = JobSync(JOB, 4, job_key=KEY, upto_seq=4)  # a probe asks from what it has seen: 2..3 not again
    assert core.handle(TimerFired(), 6.1) == [Send("w1", probe)]
    assert core.next_deadline() == 1.1 + TIMEOUTS.head  # the first unanswered bounded sync's deadline
    replay = JobSync(JOB, 1, job_key=KEY)  # everything after the last delivered event, no upto_seq
    assert core.handle(TimerFired(), 1.1 + TIMEOUTS.head) == [Send("w1", replay)]
    assert core.legacy_sync and core.next_deadline() == 1.1 + TIMEOUTS.head + TIMEOUTS.liveness
    delivered = [
        out
        for seq in (2, 3, 4, 5)  # the old worker replays all of them: 4 is held already, dropped
        for out in core.handle(MessageReceived("w1", status(seq)), 11.2)
    ]
    assert delivered == [Deliver(status(2)), Deliver(status(3)), Deliver(status(4)), Deliver(status(5))]
    # from now on probes and gaps ask for full replays, which an old worker answers
    assert core.handle(TimerFired(), 16.2) == [Send("w1", JobSync(JOB, 5, job_key=KEY))]
    assert core.handle(MessageReceived("w1", status(7)), 16.3) == [Send("w1", JobSync(JOB, 5, job_key=KEY))]
    assert core.handle(MessageReceived("w1", status(8)), 16.4) == []  # the same gap is asked for once
    assert core.handle(MessageReceived("w1", status(6)), 16.5) == [
        Deliver(status(6)),
        Deliver(status(7)),
        Deliver(status(8)),
    ]
    assert core.handle(MessageReceived("w1", status(7)), 16.6) == []  # the replay's repeats are dropped
    assert [event.seq for event in core.history] == list(range(1, 9))
    core.validate_state()


def test_a_lost_head_from_a_worker_that_sends_heads_gets_one_full_replay() -> None:
    core = assigned_core()
    core.handle(MessageReceived("w1", status(1)), 1.0)
    assert core.handle(TimerFired(), 6.0) == [Send("w1", JobSync(JOB, 1, job_key=KEY, upto_seq=1))]
    assert core.handle(MessageReceived("w1", JobHead(JOB, 1, 1)), 6.1) == []
    assert core.handle(TimerFired(), 11.1) == [Send("w1", JobSync(JOB, 1, job_key=KEY, upto_seq=1))]
    # this head is lost: one full replay, and the worker is still asked with bounded syncs afterwards
    assert core.handle(TimerFired(), 21.1) == [Send("w1", JobSync(JOB, 1, job_key=KEY))]
    assert not core.legacy_sync
    assert core.handle(TimerFired(), 26.1) == [Send("w1", JobSync(JOB, 1, job_key=KEY, upto_seq=1))]


def test_an_unreachable_worker_is_not_taken_for_an_old_one() -> None:
    core = assigned_core()
    probe = JobSync(JOB, 0, job_key=KEY, upto_seq=0)
    assert core.handle(TimerFired(), 5.0) == [Send("w1", probe)]
    assert core.handle(SendReported("w1", probe, refused=True), 5.0) == []  # it is reconnecting
    assert core.handle(TimerFired(), 10.0) == [Send("w1", probe)]
    assert core.handle(TimerFired(), 15.0) == [Send("w1", probe)]  # no head expected from a refused send
    assert not core.legacy_sync
    core.validate_state()


def test_events_from_another_peer_are_ignored() -> None:
    core = assigned_core()
    assert core.handle(MessageReceived("mallory", status(1)), 1.0) == []
    assert core.handle(MessageReceived("mallory", AppError("UNKNOWN_JOB", "no", JOB)), 1.0) == []
    assert core.last_seq == 0


def test_metrics_and_stopped_early_are_exposed() -> None:
    core = assigned_core()
    with_metrics = status(1).__class__(JOB, "running", 0.1, "e1", seq=1, metrics=Metrics(epoch=1, loss=0.5))
    core.handle(MessageReceived("w1", with_metrics), 1.0)
    assert core.metrics == Metrics(epoch=1, loss=0.5)
    core.handle(MessageReceived("w1", complete(2, stopped_early=True)), 2.0)
    assert core.outcome is Outcome.STOPPED_EARLY


def test_failed_and_cancelled_outcomes_are_typed() -> None:
    core = assigned_core()
    core.handle(MessageReceived("w1", failed(1)), 1.0)
    assert core.outcome is Outcome.FAILED
    core = assigned_core()
    core.handle(MessageReceived("w1", cancelled(1)), 1.0)
    assert core.outcome is Outcome.CANCELLED


def test_a_silent_worker_is_probed_and_a_gone_one_fails_the_job() -> None:
    core = assigned_core()
    assert core.next_deadline() == TIMEOUTS.liveness
    probe = JobSync(JOB, 0, job_key=KEY, upto_seq=0)
    assert core.handle(TimerFired(), 5.0) == [Send("w1", probe)]
    assert core.handle(SendReported("w1", probe, refused=True, code="PEER_NOT_FOUND"), 5.0) == []
    assert core.handle(TimerFired(), 10.0) == [Send("w1", probe)]
    assert core.handle(SendReported("w1", probe, refused=True, code="PEER_NOT_FOUND"), 10.0) == []
    core.handle(TimerFired(), 20.0)
    out = core.handle(SendReported("w1", probe, refused=True, code="PEER_NOT_FOUND"), 20.0)
    assert len(out) == 1 and isinstance(out[0], Fail) and isinstance(out[0].error, WorkerGoneError)
    assert "PEER_NOT_FOUND" in str(out[0].error)
    assert core.outcome is Outcome.LOST and core.next_deadline() is None


def test_a_reachable_probe_or_an_event_resets_the_unreachable_clock() -> None:
    core = assigned_core()
    probe = JobSync(JOB, 0, job_key=KEY, upto_seq=0)
    assert core.handle(SendReported("w1", probe, refused=True), 1.0) == []
    assert core.handle(SendReported("w1", probe, refused=False), 4.0) == []
    assert core.handle(TimerFired(), 5.0) == [Send("w1", probe)]
    assert core.handle(SendReported("w1", probe, refused=True), 5.0) == []
    core.handle(MessageReceived("w1", status(1)), 8.0)  # heard from: reachable again
    assert core.next_deadline() == 13.0
    assert core.handle(SendReported("w1", probe, refused=True), 12.0) == []
    assert core.handle(SendReported("w1", probe, refused=True), 12.0 + TIMEOUTS.worker_gone - 1) == [
        Send("w1", JobSync(JOB, 1, job_key=KEY, upto_seq=1))  # the due probe; not yet gone
    ]
    assert core.state is ClientJobState.ASSIGNED


def test_a_restarted_worker_s_channel_lost_tells_the_shell_to_drop_the_channel() -> None:
    core = assigned_core()
    lost = AppError("CHANNEL_LOST", "the worker restarted", JOB)
    assert core.handle(MessageReceived("w1", lost), 1.0) == [ChannelLost()]
    assert core.handle(MessageReceived("mallory", lost), 1.0) == []  # only the job's worker
    assert core.state is ClientJobState.ASSIGNED


def test_a_worker_that_forgot_the_job_fails_it() -> None:
    core = assigned_core()
    out = core.handle(MessageReceived("w1", AppError("UNKNOWN_JOB", "gone", JOB)), 1.0)
    assert len(out) == 1 and isinstance(out[0], Fail) and isinstance(out[0].error, WorkerGoneError)


def test_control_replies_go_to_the_shell() -> None:
    core = assigned_core()
    answer = RtcAnswer(JOB, "v=0")
    assert core.handle(OfferReady("v=0 offer", {"x": 1}), 0.5) == [
        Send("w1", RtcOffer(JOB, "v=0 offer", {"x": 1}, job_key=KEY))
    ]
    assert core.handle(MessageReceived("w1", answer), 1.0) == [ControlReply(answer)]


def test_reconnect_cancel_and_stop_carry_the_job_key() -> None:
    core = assigned_core()
    core.handle(MessageReceived("w1", status(1)), 1.0)
    assert core.handle(Reconnected(), 2.0) == [Send("w1", JobSync(JOB, 1, job_key=KEY, upto_seq=1))]
    assert core.handle(StopRequested(), 2.0) == [Send("w1", JobStop(JOB, job_key=KEY))]
    assert core.handle(CancelRequested(), 2.0) == [Send("w1", JobCancel(JOB, job_key=KEY))]


def test_attach_replays_from_the_start() -> None:
    core = new_core()
    assert core.handle(Attached("w9"), 0.0) == [Send("w9", JobSync(JOB, 0, job_key=KEY))]
    assert core.worker == "w9" and core.state is ClientJobState.ASSIGNED


def test_attach_without_a_key_sends_none() -> None:
    core = new_core(job_key=None)
    assert core.request.job_key_sha256 is None
    assert core.handle(Attached("w9"), 0.0) == [Send("w9", JobSync(JOB, 0))]


def test_abandoning_a_bid_releases_every_candidate_that_did_not_refuse() -> None:
    core = new_core()
    core.handle(BiddingOpened(("w1", "w2", "w3"), bid_window=5.0), 0.0)
    core.handle(MessageReceived("w2", reject()), 0.1)
    core.handle(MessageReceived("w3", accept()), 0.2)
    assert core.handle(Abandoned(), 0.3) == [Send("w1", JobCancel(JOB)), Send("w3", JobCancel(JOB))]
    assert core.outcome is Outcome.ABANDONED and core.next_deadline() is None


def test_abandoning_an_assigned_job_cancels_it_with_the_key() -> None:
    core = assigned_core()
    assert core.handle(Abandoned(), 1.0) == [Send("w1", JobCancel(JOB, job_key=KEY))]


def test_events_that_do_not_apply_are_refused_without_change() -> None:
    core = assigned_core()
    before = (core.state, core.worker, core.last_seq)
    out = core.handle(BiddingOpened(("w2",)), 1.0)
    assert len(out) == 1 and isinstance(out[0], Refused)
    assert (core.state, core.worker, core.last_seq) == before
    fresh = new_core()
    out = fresh.handle(BiddingOpened(()), 0.0)
    assert isinstance(out[0], Refused) and fresh.state is ClientJobState.NEW
