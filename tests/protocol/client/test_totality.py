"""Totality of the client's job core: in every state, every kind of event either moves the core to a state the
table allows or is refused (`Refused`) with the state unchanged — never an exception."""

from __future__ import annotations

import itertools

import pytest
from support.client_core import JOB, accept, cancelled, complete, failed, new_core, reject, status

from fsm_worker.protocol.client import ClientJobCore
from fsm_worker.protocol.client.events import (
    Abandoned,
    Attached,
    BiddingOpened,
    CancelRequested,
    ClientJobState,
    Event,
    MessageReceived,
    OfferReady,
    Reconnected,
    Refused,
    SendReported,
    StopRequested,
    TimerFired,
)
from fsm_worker.protocol.client.table import TRANSITIONS
from fsm_worker.protocol.messages import AppError, JobSync


def in_state(state: ClientJobState) -> ClientJobCore:
    """A core driven into `state` through its own events."""
    core = new_core()
    steps: dict[ClientJobState, list[tuple[Event, float]]] = {
        ClientJobState.NEW: [],
        ClientJobState.BIDDING: [(BiddingOpened(("w1", "w2")), 0.0)],
        ClientJobState.ASSIGNED: [(BiddingOpened(("w1",)), 0.0), (MessageReceived("w1", accept()), 0.1)],
        ClientJobState.FINISHED: [
            (BiddingOpened(("w1",)), 0.0),
            (MessageReceived("w1", accept()), 0.1),
            (MessageReceived("w1", complete(1)), 0.2),
        ],
        ClientJobState.FAILED: [(BiddingOpened(("w1",)), 0.0), (MessageReceived("w1", reject()), 0.1)],
        ClientJobState.ABANDONED: [(BiddingOpened(("w1",)), 0.0), (Abandoned(), 0.1)],
    }
    for event, now in steps[state]:
        core.handle(event, now)
    assert core.state is state
    return core


EVENTS: list[Event] = [
    BiddingOpened(("w1",)),
    BiddingOpened(()),
    Attached("w1"),
    MessageReceived("w1", accept()),
    MessageReceived("w1", reject()),
    MessageReceived("w1", status(1)),
    MessageReceived("w1", status(3)),
    MessageReceived("w1", complete(1)),
    MessageReceived("w1", failed(1)),
    MessageReceived("w1", cancelled(1)),
    MessageReceived("w1", AppError("UNKNOWN_JOB", "no such job", JOB)),
    MessageReceived("stranger", complete(1)),
    MessageReceived("w1", JobSync(JOB, 0)),  # a client-bound core never takes worker-bound messages
    SendReported("w1", JobSync(JOB, 0), refused=True, code="PEER_NOT_FOUND"),
    SendReported("w1", JobSync(JOB, 0), refused=False),
    OfferReady("v=0\r\n"),
    Reconnected(),
    CancelRequested(),
    StopRequested(),
    Abandoned(),
    TimerFired(),
]


@pytest.mark.parametrize(
    ("state", "event"),
    list(itertools.product(list(ClientJobState), EVENTS)),
    ids=lambda value: getattr(value, "value", type(value).__name__),
)
def test_every_state_and_event_moves_to_an_allowed_state_or_is_refused(
    state: ClientJobState, event: Event
) -> None:
    # Inside every deadline: the event alone decides; a refusal is the only output and changes nothing.
    core = in_state(state)
    out = core.handle(event, 0.5)
    assert core.state is state or core.state in TRANSITIONS[state]
    if any(isinstance(item, Refused) for item in out):
        assert core.state is state and len(out) == 1, out
    # Long after every deadline: the deadlines fire first, then the event; still only allowed moves, no raise.
    core = in_state(state)
    core.handle(event, 100.0)
    assert (
        core.state is state
        or core.state in TRANSITIONS[state]
        or any(core.state in TRANSITIONS[middle] for middle in TRANSITIONS[state])
    )


def test_every_state_is_reachable_and_enumerated() -> None:
    assert set(TRANSITIONS) == set(ClientJobState)
    for state in ClientJobState:
        assert in_state(state).state is state
