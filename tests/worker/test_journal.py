"""The journal (worker/journal.py): a real SQLite file, a real coordinator, simulated crashes by reopening.

A crash is modelled by dropping the wrapper without `commit()` (what a SIGKILL between "handled" and "journal
written" leaves) or after it (between "journal written" and "message sent"), then restoring a fresh core.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.job_keys import keyed, keyed_request
from support.worker_core import CAPS
from support.worker_core import CONFIG as KEYLESS_CONFIG

from fsm_worker.protocol.messages import to_wire
from fsm_worker.protocol.worker import events as ev
from fsm_worker.protocol.worker.coordinator import JobCoordinator
from fsm_worker.protocol.worker.instructions import Send
from fsm_worker.protocol.worker.states import WorkerStatus
from fsm_worker.worker.journal import (
    PAGE_SIZE,
    EventCodec,
    Journal,
    JournaledCore,
    JournalError,
    check_journal,
)

#: The default: every request carries a per-job key, and the journal must bring the key's hash back.
CONFIG = attrs.evolve(KEYLESS_CONFIG, require_job_key=True)
FINGERPRINT = {"config": attrs.asdict(CONFIG), "capabilities": attrs.asdict(CAPS)}


class Clock:
    def __init__(self) -> None:
        self.wall = 0.0

    def __call__(self) -> float:
        return self.wall


def open_core(path: Path, clock: Clock, host_now: float = 0.0) -> JournaledCore:
    core = JournaledCore(JobCoordinator(CAPS, CONFIG), Journal(path, FINGERPRINT), wall=clock)
    core.restore(host_now)
    return core


def request(job: str, client: str = "client") -> ev.PeerMessage:
    return ev.PeerMessage(client, keyed_request(job, "train-demo"))


def assign(job: str, client: str = "client") -> ev.PeerMessage:
    return ev.PeerMessage(client, keyed("job_assignment", job))


def sync(job: str, after: int, client: str = "client") -> ev.PeerMessage:
    return ev.PeerMessage(client, keyed("job_sync", job, after_seq=after))


def wire(instructions: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(i.to, to_wire(i.message)) for i in instructions if isinstance(i, Send)]


def seqs(instructions: list[Any]) -> list[int]:
    return [m["seq"] for _, m in wire(instructions) if "seq" in m]


EVERY_EVENT = [
    request("j1"),
    ev.PeerMessage("c", [1, {"nested": None}]),
    ev.InputsReady("j1"),
    ev.RunStarted("j1", pid=42),
    ev.RunProgress("j1", 0.5, "half", {"loss": 0.25, "epoch": 3}),
    ev.RunSucceeded("j1", 1.5, None, ("model.bin", "log.txt"), {"val": 1}, stopped_early=True),
    ev.RunFailed("j1", "exit", "boom", recoverable=True),
    ev.RunStopped("j1"),
    ev.ChannelAnswered("j1", "c", "v=0", {"fast": True}),
    ev.ChannelOpened("j1"),
    ev.ChannelFailed("j1", "c", "timeout"),
    ev.ChannelClosed("j1"),
    ev.JobFilesRemoved("j1"),
    ev.TimerFired(),
    ev.Drain(cancel_running=True),
]


@pytest.mark.parametrize("event", EVERY_EVENT, ids=lambda e: type(e).__name__)
def test_every_event_class_round_trips_through_the_codec(event: object) -> None:
    codec = EventCodec()
    assert codec.decode(codec.encode(event)) == event


def test_the_codec_refuses_what_it_cannot_name() -> None:
    codec = EventCodec()
    with pytest.raises(JournalError, match="not an attrs class"):
        codec.encode(object())
    with pytest.raises(JournalError, match="unknown event class"):
        codec.decode(b'{"t": "NoSuchEvent", "f": {}}')
    with pytest.raises(JournalError, match="unreadable"):
        codec.decode(b"not json")


def test_a_running_job_comes_back_with_its_seq_and_history(tmp_path: Path) -> None:
    clock, path = Clock(), tmp_path / "journal.sqlite"
    live = open_core(path, clock)
    for event in (request("j1"), assign("j1"), ev.InputsReady("j1"), ev.RunStarted("j1")):
        live.handle(event, 1.0)
    sent_before = seqs(live.handle(ev.RunProgress("j1", 0.5), 2.0))
    live.commit()
    # The process dies; a new one starts on a fresh monotonic clock, 100 s of wall time later.
    clock.wall += 100
    back = open_core(path, clock, host_now=5.0)
    assert back.status is WorkerStatus.BUSY and back.current_job is not None
    # The job's key hash came back with it: a sync without the key learns nothing.
    keyless = ev.PeerMessage("client", {"app_message_type": "job_sync", "job_id": "j1", "after_seq": 0})
    assert [(to, m["app_message_type"], m.get("code")) for to, m in wire(back.handle(keyless, 5.0))] == [
        ("client", "app_error", "UNKNOWN_JOB")
    ]
    # The client re-attaches: every event exactly once, in seq order, then the next one continues the sequence.
    replayed = seqs(back.handle(sync("j1", 0), 5.0))
    assert replayed == list(range(1, sent_before[-1] + 1))
    after = seqs(back.handle(ev.RunProgress("j1", 0.75), 6.0))
    assert after == [sent_before[-1] + 1]


def test_a_reservation_that_expired_while_down_is_reported_once(tmp_path: Path) -> None:
    clock, path = Clock(), tmp_path / "journal.sqlite"
    live = open_core(path, clock)
    live.handle(request("j1"), 0.0)
    live.commit()
    # Restarted within the lease: the reservation is held, with its deadline moved onto the new clock.
    clock.wall += 10
    back = open_core(path, clock, host_now=500.0)
    assert back.status is WorkerStatus.RESERVED
    assert back.next_deadline() == pytest.approx(500.0 + CONFIG.reservation_timeout - 10)
    # Restarted after it: the first TimerFired reports the expiry, and only that one.
    clock.wall += 60
    late = open_core(path, clock, host_now=7.0)
    out = wire(late.handle(ev.TimerFired(), 7.0))
    late.commit()
    assert [m["app_message_type"] for _, m in out] == ["reservation_expired"]
    again = open_core(path, clock, host_now=9.0)
    assert wire(again.handle(ev.TimerFired(), 9.0)) == []
    assert again.status is WorkerStatus.AVAILABLE


def test_events_not_committed_are_not_replayed(tmp_path: Path) -> None:
    """Killed after handling, before the journal write: nothing of it was sent (write-ahead), nothing comes back."""
    clock, path = Clock(), tmp_path / "journal.sqlite"
    live = open_core(path, clock)
    live.handle(request("j1"), 0.0)
    live.commit()
    live.handle(assign("j1"), 1.0)  # handled, never committed: its instructions never ran
    back = open_core(path, clock, host_now=1.0)
    assert back.status is WorkerStatus.RESERVED
    # The client, having got no answer, repeats the assignment: handled once now.
    back.handle(assign("j1"), 2.0)
    assert back.status is WorkerStatus.BUSY  # type: ignore[comparison-overlap]  # mypy keeps the narrowing


def test_a_finished_and_expired_job_compacts_the_journal(tmp_path: Path) -> None:
    clock, path = Clock(), tmp_path / "journal.sqlite"
    live = open_core(path, clock)
    for job in ("j1", "j2", "j3"):
        t = float(job[1]) * 10_000
        for event in (request(job), assign(job), ev.InputsReady(job), ev.RunStarted(job)):
            live.handle(event, t)
        live.handle(ev.RunSucceeded(job, 1.0, None), t + 1)
        live.commit()
        live.handle(ev.TimerFired(), t + CONFIG.retention + 2)  # retention over: the core is at rest
        live.commit()
    assert live.journal.count() <= 1
    assert open_core(path, clock).status is WorkerStatus.AVAILABLE


def test_other_settings_with_jobs_held_are_refused_by_name(tmp_path: Path) -> None:
    clock, path = Clock(), tmp_path / "journal.sqlite"
    live = open_core(path, clock)
    live.handle(request("j1"), 0.0)
    live.commit()
    live.journal.close()
    other = {**FINGERPRINT, "config": {**FINGERPRINT["config"], "retention": 5.0}}
    with pytest.raises(JournalError, match="config changed"):
        Journal(path, other)
    with sqlite3.connect(path) as db:  # a journal of a later format version
        db.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    with pytest.raises(JournalError, match="format '99'"):
        Journal(path, FINGERPRINT)
    assert any("format '99'" in p for p in check_journal(path))


def test_other_settings_are_taken_when_nothing_is_held(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path, FINGERPRINT).close()
    Journal(path, {"config": {"retention": 5.0}}).close()  # an empty journal: the new settings simply apply
    assert check_journal(path) == []


@pytest.mark.parametrize(("durable", "synchronous"), [(False, 1), (True, 2)])
def test_the_commit_mode_is_what_the_setting_asks(tmp_path: Path, durable: bool, synchronous: int) -> None:
    """NORMAL (1) in WAL mode: a commit survives a crash of the process; FULL (2): also a power loss."""
    journal = Journal(tmp_path / "journal.sqlite", {"k": 1}, durable=durable)
    db = journal._db
    assert db.execute("PRAGMA synchronous").fetchone()[0] == synchronous
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE  # a new file
    journal.write([(1.0, 2.0, b"a")])  # one event: one statement, its own transaction
    journal.write([(3.0, 4.0, b"b"), (5.0, 6.0, b"c")])
    journal.close()
    reopened = Journal(tmp_path / "journal.sqlite", {"k": 1}, durable=durable)
    assert [body for _, _, body in reopened.entries()] == [b"a", b"b", b"c"]
    reopened.close()


def test_doctor_check_names_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    assert any("cannot be read" in p for p in check_journal(path))
    with pytest.raises(JournalError, match="cannot open"):
        Journal(path, FINGERPRINT)


# --- random sequences, random kill points: the replay behaves exactly like the core that never died -----------

JOBS = st.sampled_from(["j1", "j1", "j2"])
CLIENTS = st.sampled_from(["c1", "c1", "c2"])
#: Whole seconds (exact in floats), mostly well inside the leases, sometimes past the reservation (30 s), the
#: input timeout (600 s) or the retention (3600 s).
DT = st.sampled_from([0.0, 1.0, 1.0, 2.0, 5.0, 40.0, 700.0, 4000.0])
STEP = st.one_of(
    st.builds(lambda c, j: request(j, c), CLIENTS, JOBS),
    st.builds(lambda c, j: assign(j, c), CLIENTS, JOBS),
    st.builds(lambda c, j, n: sync(j, n, c), CLIENTS, JOBS, st.integers(0, 4)),
    st.builds(lambda c, j: ev.PeerMessage(c, {"app_message_type": "job_cancel", "job_id": j}), CLIENTS, JOBS),
    st.builds(ev.InputsReady, JOBS),
    st.builds(ev.RunStarted, JOBS),
    st.builds(lambda j, p: ev.RunProgress(j, p), JOBS, st.floats(0.01, 0.99)),
    st.builds(lambda j: ev.RunSucceeded(j, 1.0, 2.0, ("m.bin",)), JOBS),
    st.builds(lambda j: ev.RunFailed(j, "exit", "boom", False), JOBS),
    st.builds(ev.RunStopped, JOBS),
    st.builds(ev.JobFilesRemoved, JOBS),
    st.just(ev.TimerFired()),
)
SEQUENCE = st.lists(st.tuples(STEP, DT, st.booleans()), min_size=1, max_size=30)


def summary(core: JournaledCore, now: float) -> tuple[Any, ...]:
    return (core.state, core.intake, core.reservation, core.current_job, core.retained_job_ids(),
            (deadline := core.next_deadline()) is None or round(deadline - now, 6))  # fmt: skip


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=SEQUENCE, rest=SEQUENCE, data=st.data())
def test_replay_after_any_kill_point_equals_the_core_that_kept_running(
    tmp_path_factory: pytest.TempPathFactory, steps: list[Any], rest: list[Any], data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("journal") / "journal.sqlite"
    clock = Clock()
    live = open_core(path, clock)
    now = 0.0
    kill = data.draw(st.integers(0, len(steps)), label="kill after step")
    committed = 0
    for index, (event, dt, commit_now) in enumerate(steps[:kill]):
        now += dt
        clock.wall += dt
        live.handle(event, now)
        if commit_now:
            live.commit()
            committed = index + 1
    # Killed after step `kill`: what was handled after the last commit was never acted on and is gone.
    # The replay must equal a core that handled exactly the committed prefix (in-memory, never journaled).
    reference = JobCoordinator(CAPS, CONFIG)
    t = 0.0
    for event, dt, _ in steps[:committed]:
        t += dt
        reference.handle(event, t)
    t = now  # the wall time of the uncommitted steps passed all the same
    # The host restarts on a new monotonic clock.
    back = open_core(path, clock, host_now=123.0)
    assert summary(back, 123.0) == (
        reference.state, reference.intake, reference.reservation, reference.current_job,
        reference.retained_job_ids(), (deadline := reference.next_deadline()) is None or round(deadline - t, 6),
    )  # fmt: skip
    # From here both see the same events: they answer the same, step by step.
    host = 123.0
    for event, dt, commit_now in rest:
        t, host = t + dt, host + dt
        clock.wall += dt
        assert wire(back.handle(event, host)) == wire(reference.handle(event, t))
        if commit_now:
            back.commit()
    back.journal.close()
    live.journal.close()


def at_rest(journaled: JournaledCore) -> bool:
    core = journaled.core
    assert isinstance(core, JobCoordinator)
    return core.at_rest()


def test_the_journal_is_kept_while_any_job_is_held(tmp_path: Path) -> None:
    clock, path = Clock(), tmp_path / "journal.sqlite"
    live = open_core(path, clock)
    assert at_rest(live)
    live.handle(request("j1"), 0.0)  # reserved: the history matters now
    assert not at_rest(live)
    live.commit()
    live.handle(ev.TimerFired(), CONFIG.reservation_timeout + 1)  # the reservation lapsed: at rest again
    assert at_rest(live)
    live.commit()
    assert live.journal.count() <= 1
