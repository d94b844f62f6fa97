"""The client's retry-across-channels core (protocol/client/channel_retry.py): scenarios with the exact
instructions, and totality (every event in every state answers, never raises)."""

from __future__ import annotations

import itertools

import pytest

from fsm_worker.protocol.client.channel_retry import (
    Begin,
    ChannelDropped,
    ChannelOpened,
    ChannelRetry,
    CloseChannel,
    Fail,
    Finish,
    OpenChannel,
    RetryEvent,
    RetryState,
    RunTransfer,
    TransferFailed,
    TransferRefused,
    TransferSucceeded,
)

DROP = ChannelDropped("CHANNEL_CLOSED", "data channel closed")


def test_an_open_channel_is_used_at_once_and_a_success_finishes() -> None:
    core = ChannelRetry("download", retries=2)
    assert core.handle(Begin(channel_open=True)) == [RunTransfer(1)]
    assert core.handle(TransferSucceeded()) == [Finish()]
    assert core.state is RetryState.DONE


def test_without_a_channel_one_is_opened_first() -> None:
    core = ChannelRetry("upload", retries=0)
    assert core.handle(Begin(channel_open=False)) == [OpenChannel()]
    assert core.handle(ChannelOpened()) == [RunTransfer(1)]


def test_a_drop_reopens_the_channel_while_the_budget_lasts_then_fails_counting_the_attempts() -> None:
    core = ChannelRetry("download", retries=2)
    core.handle(Begin(channel_open=True))
    assert core.handle(DROP) == [CloseChannel(1), OpenChannel()]
    assert core.handle(ChannelOpened()) == [RunTransfer(2)]
    assert core.handle(DROP) == [CloseChannel(2), OpenChannel()]
    assert core.handle(ChannelOpened()) == [RunTransfer(3)]
    assert core.handle(DROP) == [Fail("CHANNEL_CLOSED", "download failed 3 times: data channel closed")]
    assert core.state is RetryState.FAILED
    assert core.handle(ChannelOpened()) == [] and core.handle(TransferSucceeded()) == []  # ended


def test_no_retries_fails_on_the_first_drop() -> None:
    core = ChannelRetry("upload", retries=0)
    core.handle(Begin(channel_open=True))
    assert core.handle(DROP) == [Fail("CHANNEL_CLOSED", "upload failed 1 times: data channel closed")]


def test_an_upload_told_committed_after_a_drop_is_done() -> None:
    """The commit went through before the channel dropped: the repeated commit is refused COMMITTED."""
    core = ChannelRetry("upload", retries=1)
    core.handle(Begin(channel_open=True))
    core.handle(DROP)
    core.handle(ChannelOpened())
    assert core.handle(TransferRefused("COMMITTED", "inputs already committed")) == [Finish()]
    assert core.state is RetryState.DONE


def test_committed_means_nothing_special_to_a_download() -> None:
    core = ChannelRetry("download", retries=1)
    core.handle(Begin(channel_open=True))
    assert core.handle(TransferRefused("COMMITTED", "no")) == [Fail("COMMITTED", "no")]


@pytest.mark.parametrize(
    "event",
    [TransferRefused("TOO_LARGE", "upload over max_upload_bytes"), TransferFailed("BAD_FRAME", "junk")],
)
def test_a_refusal_or_a_local_failure_fails_at_once_without_a_retry(event: RetryEvent) -> None:
    core = ChannelRetry("upload", retries=5)
    core.handle(Begin(channel_open=True))
    assert core.handle(event) == [Fail(event.code, event.message)]  # type: ignore[union-attr]


def test_a_negative_budget_counts_as_none() -> None:
    core = ChannelRetry("download", retries=-3)
    core.handle(Begin(channel_open=True))
    assert core.handle(DROP) == [Fail("CHANNEL_CLOSED", "download failed 1 times: data channel closed")]


EVENTS: list[RetryEvent] = [
    Begin(True),
    Begin(False),
    ChannelOpened(),
    TransferSucceeded(),
    DROP,
    TransferRefused("COMMITTED", "x"),
    TransferRefused("OTHER", "x"),
    TransferFailed("LOCAL", "x"),
]


def _core_in(state: RetryState, what: str) -> ChannelRetry:
    core = ChannelRetry(what, retries=1)  # type: ignore[arg-type]
    steps: dict[RetryState, list[RetryEvent]] = {
        RetryState.IDLE: [],
        RetryState.OPENING: [Begin(False)],
        RetryState.TRANSFERRING: [Begin(True)],
        RetryState.DONE: [Begin(True), TransferSucceeded()],
        RetryState.FAILED: [Begin(True), TransferFailed("X", "x")],
    }
    for event in steps[state]:
        core.handle(event)
    assert core.state is state
    return core


@pytest.mark.parametrize(
    ("state", "event", "what"), list(itertools.product(RetryState, EVENTS, ("upload", "download")))
)
def test_totality_every_event_in_every_state_answers(state: RetryState, event: RetryEvent, what: str) -> None:
    core = _core_in(state, what)
    out = core.handle(event)
    assert isinstance(out, list)
    if state in (RetryState.DONE, RetryState.FAILED):
        assert out == [] and core.state is state  # an ended operation stays ended
    ends = [i for i in out if isinstance(i, Finish | Fail)]
    assert len(ends) <= 1 and (not ends or out[-1] is ends[0])  # an end is last, and only one
    assert core.next_deadline() is None
