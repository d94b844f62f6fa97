"""Random event sequences against an independently written reference model (DESIGN.md §4).

The reference is a few dicts and the spec's rules written plainly; after every step the coordinator's
messages must equal the reference's, its status must match, and the invariants must hold.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fsm_worker.protocol.messages import to_wire
from fsm_worker.protocol.worker.coordinator import JobCoordinator
from fsm_worker.protocol.worker.events import (
    ChannelAnswered,
    ChannelFailed,
    Drain,
    Event,
    InputsReady,
    PeerMessage,
    RunFailed,
    RunProgress,
    RunStarted,
    RunStopped,
    RunSucceeded,
    TimerFired,
)
from fsm_worker.protocol.worker.instructions import (
    AcceptOffer,
    Advertise,
    CleanupJob,
    CloseChannel,
    Drained,
    Instruction,
    PublishResults,
    Send,
    StartRun,
    StopRun,
)
from fsm_worker.protocol.worker.values import DRAIN_MARGIN

from .conftest import CAPS, CONFIG

CLIENTS = st.sampled_from(["c1", "c2", "c3"])
JOBS = st.sampled_from(["j1", "j2", "j3", "j4"])
TERMINAL = {"job_complete", "job_failed", "job_cancelled", "reservation_expired"}
JUNK = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.fixed_dictionaries(
        {"app_message_type": st.sampled_from(["job_request", "job_assignment", "job_cancel"])},
        optional={
            "job_id": st.one_of(st.integers(), st.just(""), st.text(max_size=3)),
            "job_type": st.one_of(st.integers(), st.none()),
            "config": st.one_of(st.lists(st.integers()), st.text()),
        },
    ),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


class Reference:
    """The protocol as plain dicts: what the worker should send for each event."""

    def __init__(self) -> None:
        self.status = "available"
        self.res: dict[str, Any] | None = None
        self.cur: dict[str, Any] | None = None
        self.kept: dict[str, dict[str, Any]] = {}
        self.offers: dict[str, str] = {}  # job → the SDP its channel answers
        self.draining = False
        #: The drain: None (not asked), "waiting" for the jobs, "stopping" them (its deadline passed), "drained".
        self.drain_stage: str | None = None
        self.drain_deadline = 0.0

    def held(self) -> dict[str, Any] | None:
        return self.res or self.cur

    def tick(self, now: float) -> list[tuple[str, str]]:
        out = []
        if self.res and now >= self.res["deadline"]:
            out.append((self.res["client"], "reservation_expired"))
            self.res, self.status = None, "available"
        if self.cur and self.cur["phase"] == "inputs" and now >= self.cur["assigned"] + CONFIG.input_timeout:
            out += self.finish(now, "job_failed", files=False)
        for job, kept in list(self.kept.items()):
            if now >= kept["expires"]:
                if kept["files"]:
                    out.append(("<host>", "cleanup"))
                del self.kept[job]
                self.offers.pop(job, None)
        if self.drain_stage in ("waiting", "stopping") and now >= self.drain_deadline:
            if self.drain_stage == "waiting":  # past shutdown_timeout: stop what still runs
                self.drain_stage, self.drain_deadline = "stopping", now + CONFIG.kill_grace + DRAIN_MARGIN
                out += self.stop_for_drain()
            else:  # the jobs stopped did not end within the last bound: drained all the same
                self.drain_stage = "drained"
                out.append(("<host>", "drained"))
        return out

    def settle(self) -> list[tuple[str, str]]:
        """After every event: a drain whose jobs are all gone is over (said once)."""
        if self.drain_stage in ("waiting", "stopping") and self.held() is None:
            self.drain_stage = "drained"
            return [("<host>", "drained")]
        return []

    def stop_for_drain(self) -> list[tuple[str, str]]:
        if self.cur is None or self.cur["phase"] not in ("starting", "running", "stopping"):
            return []
        first = self.cur["phase"] != "stopping" or self.cur["stop"] == "early"
        self.cur["phase"] = "stopping"
        self.cur["stop"] = self.cur["stop"] or "shutdown"
        return [("<host>", "stop")] if first else []

    def finish(self, now: float, kind: str, files: bool) -> list[tuple[str, str]]:
        assert self.cur is not None
        out = [(self.cur["client"], kind), ("<host>", "publish" if files else "cleanup")]
        if not files:
            self.offers.pop(self.cur["job"], None)
        self.kept[self.cur["job"]] = {
            "client": self.cur["client"],
            "expires": now + CONFIG.retention,
            "files": files,
            "events": self.cur["events"] + 1,
        }
        self.cur, self.status = None, "available"
        return out

    def request(self, client: str, job: str, big: bool, now: float) -> list[tuple[str, str]]:
        held = self.held()
        if held is not None:
            return [(client, "job_response")]  # either "busy" or the same acceptance again
        if self.draining or big or job in self.kept:
            return [(client, "job_response")]
        self.res = {"job": job, "client": client, "deadline": now + CONFIG.reservation_timeout}
        self.status = "reserved"
        return [(client, "job_response")]

    def assign(self, client: str, job: str, now: float) -> list[tuple[str, str]]:
        if self.res and (self.res["job"], self.res["client"]) == (job, client):
            self.cur = {
                "job": job,
                "client": client,
                "assigned": now,
                "phase": "inputs",
                "stop": None,
                "events": 0,
            }
            self.res, self.status = None, "busy"
            return []
        if self.cur and (self.cur["job"], self.cur["client"]) == (job, client):
            return []
        return [(client, "app_error")]

    def cancel(self, client: str, job: str, now: float) -> list[tuple[str, str]]:
        if self.res and (self.res["job"], self.res["client"]) == (job, client):
            self.res, self.status = None, "available"
            return [(client, "job_cancelled")]
        if self.cur and (self.cur["job"], self.cur["client"]) == (job, client):
            if self.cur["phase"] == "inputs":
                return self.finish(now, "job_cancelled", files=False)
            first = self.cur["phase"] != "stopping" or self.cur["stop"] == "early"  # a cancel stops now
            self.cur["phase"], self.cur["stop"] = "stopping", "cancel"
            return [("<host>", "stop")] if first else []
        return []

    def stop(self, client: str, job: str) -> list[tuple[str, str]]:
        if (
            self.cur
            and (self.cur["job"], self.cur["client"]) == (job, client)
            and self.cur["phase"] == "running"
        ):
            self.cur["phase"], self.cur["stop"] = "stopping", "early"
            return [("<host>", "stop")]
        return []

    def owns_channel(self, client: str, job: str) -> bool:
        mine = self.cur is not None and (self.cur["job"], self.cur["client"]) == (job, client)
        kept = self.kept.get(job)
        return mine or bool(kept and kept["files"] and kept["client"] == client)

    def offer(self, client: str, job: str, sdp: str) -> list[tuple[str, str]]:
        if not self.owns_channel(client, job):
            return [(client, "app_error")]
        if self.offers.get(job) == sdp:
            return []  # the same offer delivered twice
        self.offers[job] = sdp
        return [("<host>", "accept_offer")]

    def channel(self, kind: str, client: str, job: str) -> list[tuple[str, str]]:
        if kind == "failed":
            self.offers.pop(job, None)
            return [("<host>", "close"), (client, "app_error")]
        return [(client, "rtc_answer")] if self.owns_channel(client, job) else []

    def sync(self, client: str, job: str, after: int) -> list[tuple[str, str]]:
        if self.cur and (self.cur["job"], self.cur["client"]) == (job, client):
            return [(client, "replay")] * max(0, self.cur["events"] - after)
        kept = self.kept.get(job)
        if kept and kept["client"] == client:
            return [(client, "replay")] * max(0, kept["events"] - after)
        return [(client, "app_error")]

    def run_event(self, kind: str, job: str, now: float) -> list[tuple[str, str]]:
        cur = self.cur
        if cur is None or cur["job"] != job:
            return []
        phase = cur["phase"]
        if kind == "inputs_ready":
            if phase != "inputs":
                return []
            cur["phase"] = "starting"
            return [("<host>", "start")]
        if kind == "started":
            if phase != "starting":
                return []
            cur["phase"], cur["events"] = "running", cur["events"] + 1
            return [(cur["client"], "job_status")]
        if kind == "progress":
            if phase != "running":
                return []
            cur["events"] += 1
            return [(cur["client"], "job_status")]
        if phase == "inputs":
            return []  # no run was started: nothing of it can end
        if phase == "stopping" and cur["stop"] == "early":
            return self.finish(now, "job_failed" if kind == "failed" else "job_complete", files=True)
        if phase == "stopping":
            return self.finish(
                now,
                "job_cancelled" if cur["stop"] == "cancel" else "job_failed",
                files=cur["stop"] != "cancel",
            )
        if kind == "stopped":
            return []
        return self.finish(now, "job_complete" if kind == "succeeded" else "job_failed", files=True)

    def drain(self, cancel: bool, now: float) -> list[tuple[str, str]]:
        self.draining = True
        if self.drain_stage is None:
            self.drain_stage, self.drain_deadline = "waiting", now + CONFIG.shutdown_timeout
        if self.res:
            out = [(self.res["client"], "reservation_expired")]
            self.res, self.status = None, "available"
            return out
        if self.cur and self.cur["phase"] == "inputs":
            return self.finish(now, "job_failed", files=False)
        return self.stop_for_drain() if cancel else []


def _observed(instructions: list[Instruction]) -> tuple[list[tuple[str, str]], list[Send]]:
    """What the coordinator did, in the reference's vocabulary (advertisements are checked separately)."""
    names = {
        StartRun: "start",
        StopRun: "stop",
        CleanupJob: "cleanup",
        AcceptOffer: "accept_offer",
        PublishResults: "publish",
        CloseChannel: "close",
        Drained: "drained",
    }
    out, sends = [], []
    for item in instructions:
        if isinstance(item, Send):
            sends.append(item)
            out.append((item.to, item.message.TYPE))
        elif type(item) in names:
            out.append(("<host>", names[type(item)]))
    return out, sends


class CoordinatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core = JobCoordinator(CAPS, CONFIG)
        self.ref = Reference()
        self.now = 0.0
        self.events_per_job: dict[str, list[dict[str, Any]]] = {}
        self.steps = 0

    def step(
        self, event: Event, expected: list[tuple[str, str]], replay_from: int | None = None
    ) -> list[Send]:
        """Feed `event`; what it sends from index `replay_from` on are replays of earlier job events."""
        status_before = self.core.status
        out = self.core.handle(event, self.now)
        expected = expected + self.ref.settle()
        observed, sends = _observed(out)
        if replay_from is not None:
            observed[replay_from:] = [
                (to, "replay" if kind != "app_error" and to != "<host>" else kind)
                for to, kind in observed[replay_from:]
            ]
            sends = sends[:replay_from]
        assert observed == expected, (event, observed, expected)
        assert self.core.status.value == self.ref.status
        advertised = [item for item in out if isinstance(item, Advertise)]
        assert bool(advertised) == (status_before is not self.core.status)
        if advertised:  # the new status is published before what follows from it
            assert out[: len(advertised)] == advertised
        for send in sends:
            wire = to_wire(send.message)
            if wire["app_message_type"] not in ("app_error", "job_response"):
                self.events_per_job.setdefault(wire["job_id"], []).append(wire)
        self.steps += 1
        return sends

    def message(self, sender: str, payload: object, expected: list[tuple[str, str]]) -> None:
        self.step(PeerMessage(sender, payload), expected)

    @rule(client=CLIENTS, job=JOBS, big=st.booleans())
    def request(self, client: str, job: str, big: bool) -> None:
        expected = self.ref.tick(self.now)
        was_reserved = self.ref.res is not None
        expected += self.ref.request(client, job, big, self.now)
        if self.ref.res is not None and not was_reserved:
            self.events_per_job[job] = []  # a new job under this id begins
        payload = {
            "app_message_type": "job_request",
            "job_id": job,
            "job_type": "train-demo",
            "requirements": {"min_gpu_memory_mb": 99999 if big else 1024},
        }
        self.message(client, payload, expected)

    @rule(client=CLIENTS, job=JOBS)
    def assign(self, client: str, job: str) -> None:
        expected = self.ref.tick(self.now) + self.ref.assign(client, job, self.now)
        self.message(client, {"app_message_type": "job_assignment", "job_id": job}, expected)

    @rule(data=st.data())
    def assign_held(self, data: st.DataObject) -> None:
        """The right client assigns the job it holds (the common, happy path)."""
        held = self.ref.held()
        if held is not None:
            self.assign(held["client"], held["job"])

    @rule(client=CLIENTS, job=JOBS)
    def cancel(self, client: str, job: str) -> None:
        expected = self.ref.tick(self.now) + self.ref.cancel(client, job, self.now)
        self.message(client, {"app_message_type": "job_cancel", "job_id": job}, expected)

    @rule(client=CLIENTS, job=JOBS)
    def stop(self, client: str, job: str) -> None:
        expected = self.ref.tick(self.now) + self.ref.stop(client, job)
        self.message(client, {"app_message_type": "job_stop", "job_id": job}, expected)

    @rule(data=st.data())
    def stop_held(self, data: st.DataObject) -> None:
        """The job's own client stops it early."""
        if self.ref.cur is not None:
            self.stop(self.ref.cur["client"], self.ref.cur["job"])

    @rule(client=CLIENTS, job=JOBS, sdp=st.sampled_from(["v=0", "v=1"]))
    def offer(self, client: str, job: str, sdp: str) -> None:
        expected = self.ref.tick(self.now) + self.ref.offer(client, job, sdp)
        self.message(client, {"app_message_type": "rtc_offer", "job_id": job, "sdp": sdp}, expected)

    @rule(kind=st.sampled_from(["answered", "failed"]), client=CLIENTS, job=JOBS)
    def channel(self, kind: str, client: str, job: str) -> None:
        """The RTC shell reports what became of a job's data channel."""
        event: Event = (
            ChannelAnswered(job, client, "v=0 answer", {})
            if kind == "answered"
            else ChannelFailed(job, client, "no answer in time")
        )
        expected = self.ref.tick(self.now) + self.ref.channel(kind, client, job)
        self.step(event, expected)

    @rule(client=CLIENTS, job=JOBS, after=st.integers(0, 4))
    def sync(self, client: str, job: str, after: int) -> None:
        expected = self.ref.tick(self.now)
        replayed = self.ref.sync(client, job, after)
        payload = {"app_message_type": "job_sync", "job_id": job, "after_seq": after}
        self.step(PeerMessage(client, payload), expected + replayed, replay_from=len(expected))

    @rule(client=CLIENTS, payload=JUNK)
    def malformed(self, client: str, payload: object) -> None:
        expected = self.ref.tick(self.now)
        before = (self.core.status, self.core.reservation, self.core.current_job, self.core.state)
        out = self.core.handle(PeerMessage(client, payload), self.now)
        observed, _ = _observed(out)
        assert observed[: len(expected)] == expected
        refused = observed[len(expected) :]
        assert refused in ([], [(client, "app_error")])
        if not expected:
            assert (self.core.status, self.core.reservation, self.core.current_job, self.core.state) == before

    @rule(
        kind=st.sampled_from(["inputs_ready", "started", "progress", "succeeded", "failed", "stopped"]),
        stale=st.booleans(),
    )
    def run_event(self, kind: str, stale: bool) -> None:
        job = "stale-job" if stale or self.ref.cur is None else self.ref.cur["job"]
        events: dict[str, Event] = {
            "inputs_ready": InputsReady(job),
            "started": RunStarted(job),
            "progress": RunProgress(job, 0.5, "halfway"),
            "succeeded": RunSucceeded(job, 1.0, 0.5),
            "failed": RunFailed(job, "EXIT_NONZERO", "exit 1", False),
            "stopped": RunStopped(job),
        }
        event = events[kind]
        expected = self.ref.tick(self.now) + self.ref.run_event(kind, job, self.now)
        self.step(event, expected)

    @rule(seconds=st.sampled_from([0.5, 10.0, 29.0, 31.0, 650.0, 4000.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.step(TimerFired(), self.ref.tick(self.now))

    @rule()
    def run_held(self) -> None:
        """The held job's inputs arrive and its run starts (the happy path to a run a drain waits for)."""
        if self.ref.cur is not None and self.ref.cur["phase"] == "inputs":
            job = self.ref.cur["job"]
            self.step(
                InputsReady(job), self.ref.tick(self.now) + self.ref.run_event("inputs_ready", job, self.now)
            )
            self.step(RunStarted(job), self.ref.tick(self.now) + self.ref.run_event("started", job, self.now))

    @rule(cancel=st.booleans())
    def drain_a_run(self, cancel: bool) -> None:
        """The worker drains while a run is going (the runs' own end, or the drain's deadlines, end it)."""
        if self.ref.cur is not None and self.ref.cur["phase"] in ("starting", "running", "stopping"):
            expected = self.ref.tick(self.now) + self.ref.drain(cancel, self.now)
            self.step(Drain(cancel), expected)

    @rule()
    def drain_deadline_passes(self) -> None:
        """Time reaches the drain's next bound exactly (its escalation, then its last bound)."""
        if self.ref.drain_stage in ("waiting", "stopping"):
            self.now = max(self.now, self.ref.drain_deadline)
            self.step(TimerFired(), self.ref.tick(self.now))

    @rule(cancel=st.booleans())
    def drain(self, cancel: bool) -> None:
        if self.steps % 7:  # shutting down ends the useful life of the worker: keep it rare
            return
        expected = self.ref.tick(self.now) + self.ref.drain(cancel, self.now)
        self.step(Drain(cancel), expected)

    @invariant()
    def state_is_consistent(self) -> None:
        self.core.validate_state(self.now)
        deadline = self.core.next_deadline()
        assert deadline is None or deadline > self.now

    @invariant()
    def job_events_follow_the_grammar(self) -> None:
        """Per job: status* then exactly one terminal message, numbered 1, 2, 3, ... and nothing after it."""
        for events in self.events_per_job.values():
            kinds = [event["app_message_type"] for event in events]
            assert all(kind not in TERMINAL for kind in kinds[:-1]), kinds
            seqs = [event["seq"] for event in events if "seq" in event]
            assert seqs == list(range(1, len(seqs) + 1)), seqs


CoordinatorMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCoordinator = CoordinatorMachine.TestCase
