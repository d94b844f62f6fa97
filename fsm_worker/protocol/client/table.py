"""The client job core's one table: every state change `ClientJobCore` may make (anything else is refused
without change); the totality test checks the core against it."""

from __future__ import annotations

from fsm_worker.protocol.client.events import ClientJobState

NEW, BIDDING, ASSIGNED = ClientJobState.NEW, ClientJobState.BIDDING, ClientJobState.ASSIGNED
FINISHED, FAILED, ABANDONED = ClientJobState.FINISHED, ClientJobState.FAILED, ClientJobState.ABANDONED

#: The one table: every state change the core may make. Anything else is refused without change.
TRANSITIONS: dict[ClientJobState, frozenset[ClientJobState]] = {
    NEW: frozenset({BIDDING, ASSIGNED, ABANDONED}),
    BIDDING: frozenset({ASSIGNED, FAILED, ABANDONED}),
    ASSIGNED: frozenset({FINISHED, FAILED, ABANDONED}),
    FINISHED: frozenset(),
    FAILED: frozenset(),
    ABANDONED: frozenset(),
}
