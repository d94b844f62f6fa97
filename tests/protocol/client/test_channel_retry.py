"""The client's retry-across-channels core (protocol/client/channel_retry.py): scenarios with the exact
instructions, and totality (every event in every state answers, never raises)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


# --- against a reference model: any run of attempt outcomes ---------------------------------------------------


OUTCOMES = st.sampled_from(["ok", "drop", "committed", "refused", "local"])


@given(
    what=st.sampled_from(["upload", "download"]),
    retries=st.integers(0, 4),
    starts_open=st.booleans(),
    outcomes=st.lists(OUTCOMES, max_size=8),
)
def test_the_core_agrees_with_a_reference_model(
    what: str, retries: int, starts_open: bool, outcomes: list[str]
) -> None:
    """The shell's loop, played with a script of attempt outcomes: channels opened, attempts made, the end."""
    core = ChannelRetry(what, retries)  # type: ignore[arg-type]
    script = iter(outcomes)
    pending = core.handle(Begin(starts_open))
    opened = attempts = closed = 0
    end: Finish | Fail | None = None
    while pending:
        instruction, *pending = pending
        if isinstance(instruction, OpenChannel):
            opened += 1
            pending += core.handle(ChannelOpened())
        elif isinstance(instruction, CloseChannel):
            closed += 1
            assert instruction.attempt == attempts
        elif isinstance(instruction, RunTransfer):
            attempts += 1
            assert instruction.attempt == attempts
            outcome = next(script, None)
            if outcome is None:
                break  # the script ran out mid-attempt: the operation is still going
            events: dict[str, RetryEvent] = {
                "ok": TransferSucceeded(),
                "drop": DROP,
                "committed": TransferRefused("COMMITTED", "c"),
                "refused": TransferRefused("NOPE", "r"),
                "local": TransferFailed("IO_ERROR", "l"),
            }
            event = events[outcome]
            pending += core.handle(event)
        else:
            assert pending == []  # the end is the last instruction
            end = instruction
    # the reference: the first outcome that is not a drop ends it, unless the drops spend the budget first
    drops, consumed = 0, 0
    expected: Finish | Fail | None = None
    for outcome in outcomes:
        consumed += 1
        if outcome == "drop":
            drops += 1
            if drops > retries:
                expected = Fail("CHANNEL_CLOSED", f"{what} failed {drops} times: data channel closed")
                break
            continue
        if outcome == "ok" or (outcome == "committed" and what == "upload"):
            expected = Finish()
        else:
            expected = {"committed": Fail("COMMITTED", "c"), "refused": Fail("NOPE", "r"),
                        "local": Fail("IO_ERROR", "l")}[outcome]  # fmt: skip
        break
    assert end == expected
    assert attempts == consumed + (expected is None)  # one more attempt waits when the script ran out
    assert closed == min(drops, retries)  # a dropped channel is closed before each retry, not at the end
    assert opened == closed + (not starts_open)
    states = {Finish: RetryState.DONE, Fail: RetryState.FAILED}
    assert core.state is states.get(type(end), RetryState.TRANSFERRING)
