"""Issue 12 scenarios: several slots, each job its own machine, and the FIFO queue behind them."""

from __future__ import annotations

from typing import Any

import attrs

from fsm_worker.protocol.messages import JobStatus
from fsm_worker.protocol.worker.coordinator import JobCoordinator
from fsm_worker.protocol.worker.events import Drain, InputsReady, RunStarted, RunSucceeded, TimerFired
from fsm_worker.protocol.worker.instructions import Advertise, Send, StartRun
from fsm_worker.protocol.worker.slots import Slot
from fsm_worker.protocol.worker.states import WorkerState, WorkerStatus

from .conftest import CAPS, CONFIG, Driver, sent


class SlotDriver(Driver):
    def __init__(self, gpus: int = 2, **config: Any) -> None:
        super().__init__()
        slots = tuple(Slot(i, (i,), 8192) for i in range(gpus))
        self.core = JobCoordinator(CAPS, attrs.evolve(CONFIG, **config), slots=slots)

    def run(self, job_id: str, sender: str = "client", **extra: Any) -> list[Any]:
        """Request, assign and commit `job_id`; return all the instructions."""
        out = self.request(sender, job_id=job_id, **extra)
        out += self.assign(sender, job_id=job_id)
        return out + self.feed(InputsReady(job_id))


def test_two_slots_run_two_jobs_each_on_its_own_gpu() -> None:
    d = SlotDriver(gpus=2)
    first = d.run("a", "alice")
    second = d.run("b", "bob")
    starts = [i for i in [*first, *second] if isinstance(i, StartRun)]
    assert [(s.job.job_id, s.cuda_visible_devices) for s in starts] == [("a", "0"), ("b", "1")]
    assert d.core.status is WorkerStatus.BUSY
    third = d.request("carol", job_id="c")
    assert sent(third)[0][1]["reason"] == "busy"


def test_advertised_view_follows_the_slots_and_names_no_job() -> None:
    d = SlotDriver(gpus=2)
    out = d.request("alice", job_id="a")
    (advert,) = [i for i in out if isinstance(i, Advertise)]
    assert advert.status is WorkerStatus.AVAILABLE and advert.view is not None
    assert advert.view.free_slots == 1 and advert.view.running == 0
    assert [state for *_, state in advert.view.slots] == ["reserved", "available"]
    out = d.assign("alice", job_id="a")
    (advert,) = [i for i in out if isinstance(i, Advertise)]
    assert advert.view is not None and advert.view.running == 1


def test_a_job_asking_two_gpus_gets_them_together_or_is_refused() -> None:
    d = SlotDriver(gpus=2)
    out = d.run("a", requirements={"gpus": 2})
    assert [i.cuda_visible_devices for i in out if isinstance(i, StartRun)] == ["0,1"]
    too_many = d.request("bob", job_id="b", requirements={"gpus": 3}, queue=True)
    assert sent(too_many)[0][1]["reason"] == "incompatible"


def test_queued_job_gets_the_freed_slot_and_runs_with_its_inputs_committed_while_queued() -> None:
    d = SlotDriver(gpus=1)
    d.run("a", "alice")
    d.feed(RunStarted("a"))
    out = d.request("bob", job_id="b", queue=True)
    ((_, reply),) = sent(out)
    assert reply["accepted"] is True and reply["queued"] is True and reply["queue_position"] == 1
    assert reply["estimated_start_seconds"] >= 0
    d.assign("bob", job_id="b")
    assert d.core.job_state("b") is WorkerState.QUEUED_ASSIGNED
    assert d.feed(InputsReady("b")) == []  # committed while queued: nothing starts yet
    out = d.feed(RunSucceeded("a", 1.0, None))
    assert [i.job.job_id for i in out if isinstance(i, StartRun)] == ["b"]
    assert d.core.job_state("b") is WorkerState.STARTING


def test_queue_positions_move_up_and_each_client_hears_its_new_place() -> None:
    d = SlotDriver(gpus=1)
    d.run("a", "alice")
    for job, client in (("b", "bob"), ("c", "carol")):
        d.request(client, job_id=job, queue=True)
        d.assign(client, job_id=job)
    out = d.cancel("bob", job_id="b")
    statuses = [(i.to, i.message) for i in out if isinstance(i, Send) and isinstance(i.message, JobStatus)]
    assert [(to, m.status, m.queue_position, m.seq) for to, m in statuses] == [("carol", "queued", 1, None)]
    assert d.core.job_state("b") is WorkerState.AVAILABLE


def test_queue_full_and_client_cap() -> None:
    d = SlotDriver(gpus=1, queue_size=2, max_jobs_per_client=1)
    d.run("a", "alice")
    assert sent(d.request("bob", job_id="b", queue=True))[0][1]["queued"] is True
    assert sent(d.request("bob", job_id="b2", queue=True))[0][1]["reason"] == "client_cap"
    assert sent(d.request("carol", job_id="c", queue=True))[0][1]["queued"] is True
    assert sent(d.request("dave", job_id="d", queue=True))[0][1]["reason"] == "queue_full"


def test_queue_lease_expires_without_job_sync_and_is_kept_alive_by_it() -> None:
    d = SlotDriver(gpus=1, queue_lease=60.0)
    d.run("a", "alice")
    d.request("bob", job_id="b", queue=True)
    d.assign("bob", job_id="b")
    d.request("carol", job_id="c", queue=True)
    d.message("bob", {"app_message_type": "job_sync", "job_id": "b"}, at=50.0)
    out = d.feed(TimerFired(), at=60.0)
    failed = [m for to, m in sent(out) if m["app_message_type"] == "job_failed"]
    assert [(m["job_id"], m["error"]["code"]) for m in failed] == [("c", "QUEUE_LEASE_EXPIRED")]
    assert d.core.job_state("b") is WorkerState.QUEUED_ASSIGNED
    out = d.feed(TimerFired(), at=110.0)
    assert [m["error"]["code"] for _, m in sent(out)] == ["QUEUE_LEASE_EXPIRED"]
    assert d.core.sched.queue.length == 0


def test_drain_releases_the_queue_before_any_slot_frees() -> None:
    d = SlotDriver(gpus=1)
    d.request("alice", job_id="a")
    d.assign("alice", job_id="a")
    d.request("bob", job_id="b", queue=True)
    d.assign("bob", job_id="b")
    out = d.feed(Drain())
    assert not any(isinstance(i, StartRun) for i in out)
    codes = [(m["job_id"], m["error"]["code"]) for _, m in sent(out) if m["app_message_type"] == "job_failed"]
    assert codes == [("b", "WORKER_SHUTDOWN"), ("a", "WORKER_SHUTDOWN")]
    assert d.core.sched.queue.length == 0 and d.core.status is WorkerStatus.AVAILABLE


def test_a_small_job_may_pass_a_waiting_big_one_a_bounded_number_of_times_then_slots_are_held() -> None:
    """Head-of-line blocking: the head needs 2 GPUs, 1 is free. Jobs that fit may pass it `queue_bypass_limit`
    times; then the free slot is held for it (advertised as `held`, not free) until it can start."""
    d = SlotDriver(gpus=3, queue_bypass_limit=2, max_jobs_per_client=8)
    d.run("a", "alice", requirements={"gpus": 2})
    d.feed(RunStarted("a"))
    assert sent(d.request("bob", job_id="big", requirements={"gpus": 2}, queue=True))[0][1]["queued"] is True
    assert d.core.status is WorkerStatus.AVAILABLE  # one slot is free for a one-GPU job: true
    for n in (1, 2):  # two small jobs pass the big one, each on the free slot, one after the other
        out = d.run(f"small{n}", "carol")
        assert [i.cuda_visible_devices for i in out if isinstance(i, StartRun)] == ["2"]
        d.feed(RunStarted(f"small{n}"))
        out = d.feed(RunSucceeded(f"small{n}", 1.0, None))
        if n == 1:
            assert d.core.status is WorkerStatus.AVAILABLE
    assert d.core.sched.queue.entries[0].bypassed == 2
    (advert,) = [i for i in out if isinstance(i, Advertise)]  # the slot freed by small2 is held for "big"
    assert advert.status is WorkerStatus.BUSY and advert.view is not None and advert.view.free_slots == 0
    assert [state for *_, state in advert.view.slots] == ["busy", "busy", "held"]
    refused = d.request("carol", job_id="small3")
    assert sent(refused)[0][1]["accepted"] is False and sent(refused)[0][1]["reason"] == "busy"
    queued = d.request("carol", job_id="small3", queue=True)
    assert sent(queued)[0][1]["queue_position"] == 2  # behind the big one: it may not pass any more
    d.feed(RunSucceeded("a", 1.0, None))  # two slots free: the big one starts, then small3 on the third
    assert d.core.job_state("big") is WorkerState.RESERVED  # not assigned while queued: reserved now
    assert d.core.sched.slots.cuda_visible_devices("big") == "0,1"
    assert d.core.sched.slots.cuda_visible_devices("small3") == "2"
    assert d.core.sched.queue.length == 0 and d.core.status is not WorkerStatus.AVAILABLE


def test_with_queue_bypass_limit_zero_nothing_passes_the_head_and_the_free_slot_is_not_advertised() -> None:
    d = SlotDriver(gpus=2, queue_bypass_limit=0)
    d.run("a", "alice")
    d.feed(RunStarted("a"))
    out = d.request("bob", job_id="big", requirements={"gpus": 2}, queue=True)
    (advert,) = [i for i in out if isinstance(i, Advertise)]
    assert advert.status is WorkerStatus.BUSY and advert.view is not None and advert.view.free_slots == 0
    assert sent(d.request("carol", job_id="small"))[0][1]["reason"] == "busy"
