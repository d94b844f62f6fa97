"""The pure FIFO queue: refusals that name their setting, positions, leases, the start estimate."""

from __future__ import annotations

import pytest

from fsm_worker.protocol.worker.job_queue import (
    JobQueue,
    QueueEntry,
    QueueRefusal,
    estimated_start_seconds,
)


def entry(job_id: str, client: str = "c", gpus: int = 1, alive_at: float = 0.0) -> QueueEntry:
    return QueueEntry(job_id, client, gpus, 1.0, alive_at)


def test_fifo_positions_move_up_when_an_entry_leaves() -> None:
    queue = JobQueue(4, 4).push(entry("a")).push(entry("b")).push(entry("c"))
    assert [queue.position(j) for j in "abc"] == [1, 2, 3]
    queue = queue.remove("a")
    assert (queue.head(), queue.position("c"), queue.position("a")) == (entry("b"), 2, None)


def test_refusals_name_their_setting() -> None:
    assert JobQueue(0, 4).refusal("c", 0) is QueueRefusal.DISABLED
    full = JobQueue(1, 4).push(entry("a", "other"))
    assert full.refusal("c", 0) is QueueRefusal.FULL
    assert QueueRefusal.FULL.setting == "queue_size"
    capped = JobQueue(8, 2).push(entry("a"))
    assert capped.refusal("c", 1) is QueueRefusal.CLIENT_CAP  # one held + one queued = the cap of 2
    assert QueueRefusal.CLIENT_CAP.setting == "max_jobs_per_client"
    assert capped.refusal("other", 1) is None


def test_a_job_is_queued_once() -> None:
    with pytest.raises(ValueError, match="already queued"):
        JobQueue(4, 4).push(entry("a")).push(entry("a"))


def test_lease_expiry_and_keep_alive() -> None:
    queue = JobQueue(4, 4).push(entry("a", alive_at=0.0)).push(entry("b", alive_at=30.0))
    assert queue.next_deadline(60.0) == 60.0
    assert queue.expired(60.0, 60.0) == ("a",)
    kept = queue.keep_alive("a", 50.0)
    assert kept.expired(60.0, 60.0) == ()
    assert kept.next_deadline(60.0) == 90.0


def test_estimated_start_from_running_estimates() -> None:
    # two slots busy until t=100 and t=200; a 1-slot job waits 100 s, a 2-slot job 200 s
    assert estimated_start_seconds((100.0, 200.0), 0, (), 1, now=0.0) == 100.0
    assert estimated_start_seconds((100.0, 200.0), 0, (), 2, now=0.0) == 200.0
    # a 1-slot job of 50 s ahead takes the t=100 slot until t=150
    assert estimated_start_seconds((100.0, 200.0), 0, ((1, 50.0),), 1, now=0.0) == 150.0
    # a job past its estimate counts as ending now; a free slot means now
    assert estimated_start_seconds((5.0,), 1, (), 1, now=10.0) == 0.0
    assert estimated_start_seconds((5.0, 20.0), 0, (), 2, now=10.0) == 10.0
