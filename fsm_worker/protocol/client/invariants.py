"""The client job core's invariants, checked by the tests after every step (DESIGN.md: Dask's `validate_state`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fsm_worker.protocol.client.table import ABANDONED, ASSIGNED, BIDDING, FAILED, FINISHED, NEW

if TYPE_CHECKING:
    from fsm_worker.protocol.client.job import ClientJobCore


def check_invariants(core: ClientJobCore) -> None:
    """Raise AssertionError when the core's data contradicts its state."""
    assert (core.worker is None) == (
        core.state in (NEW, BIDDING) or (core.state in (FAILED, ABANDONED) and core.worker is None)
    )
    assert (core.terminal is not None) == (core.state is FINISHED)
    assert [e.seq for e in core.history] == list(range(1, core.last_seq + 1)), "history is 1..last_seq"
    assert (core.state is BIDDING) == (core.bids.response_deadline is not None)
    if core.state is ASSIGNED:
        assert core.liveness.probe_at is not None, "a followed job always has a liveness deadline"
    else:
        assert core.seq.head_due is None, "only a followed job waits for a job_head"
    if core.queued:
        assert core.state in (ASSIGNED, FAILED, ABANDONED), "only a held job waits in a queue"
    assert (core.lease.keepalive_at is not None) == (core.queued and core.state is ASSIGNED), (
        "a job waiting in a queue (and only that) keeps its queue lease alive"
    )
    core.bids.validate(core.worker, settled=core.state is not BIDDING and core.state is not NEW)
