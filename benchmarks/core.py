"""Core events/s: the coordinator (parse + guards + outbox) vs a bare dict-dispatch machine, same protocol.

Run: `python benchmarks/core.py [--cycles N]`. Both sides process the same stream of events: per job cycle a
request, a competing request (rejected busy), an assignment, inputs ready, run start, 5 progress reports and
success — 11 events. Prints events/s for each and the ratio (same run, same machine).

The journaled rows run the same coordinator behind `worker/journal.py` (SQLite in WAL mode, in a temporary
directory): every event written before its instructions would be carried out, one transaction per event
(the worst case: each event alone in its event-loop turn) and per group of `--group` events (group commit).
They interleave with the plain coordinator (ABBA) and print the ratio to it.

`--against DIR` also measures the coordinator of another checkout (e.g. a `git worktree` of an older commit):
rounds of this tree and that one alternate in ABBA order, each in a fresh subprocess, and the ratio of the
medians is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fsm_worker.protocol import messages
from fsm_worker.protocol.worker import events as core_events
from fsm_worker.protocol.worker.capabilities import WorkerCapabilities
from fsm_worker.protocol.worker.coordinator import JobCoordinator
from fsm_worker.protocol.worker.events import (
    Event,
    InputsReady,
    PeerMessage,
    RunProgress,
    RunStarted,
    RunSucceeded,
)

CAPS = WorkerCapabilities(8192, "bench", "12", ("train-demo",), "bench")
TARGET_EVENTS_PER_SECOND = 50_000
TARGET_JOURNALED_EVENTS_PER_SECOND = 25_000
TARGET_JOURNAL_COST = 2.0  # plain / journaled


#: A worker requires a per-job key by default: the request carries the key's hash, the assignment the key.
JOB_KEY = "bench-job-key-" + "k" * 29
JOB_KEY_SHA256 = hashlib.sha256(JOB_KEY.encode()).hexdigest()


def workload(cycles: int) -> list[Event]:
    events: list[Event] = []
    for n in range(cycles):
        job = f"job-{n}"
        request = {
            "app_message_type": "job_request",
            "job_id": job,
            "job_type": "train-demo",
            "config": {"epochs": 5},
            "job_key_sha256": JOB_KEY_SHA256,
        }
        assignment = {"app_message_type": "job_assignment", "job_id": job, "job_key": JOB_KEY}
        events += [
            PeerMessage("client", request),
            PeerMessage("rival", {**request, "job_id": f"rival-{n}"}),
            PeerMessage("client", assignment),
            InputsReady(job),
            RunStarted(job),
            *(RunProgress(job, step / 6, f"epoch {step}") for step in range(1, 6)),
            _succeeded(job),
        ]
    return events


def _succeeded(job: str) -> Event:
    if hasattr(core_events, "TERMINAL_EVENTS"):  # this tree's run events (the runner's)
        return RunSucceeded(job, 0.1, 0.01)
    return RunSucceeded(job, messages.JobResult(0.1, 0.01))  # type: ignore[call-arg, arg-type]  # an older tree


class BareMachine:
    """The same protocol as a dict of handlers on a status string: no validation, no table, no log."""

    def __init__(self) -> None:
        self.status = "available"
        self.held: tuple[str, str] | None = None
        self.seq = 0
        self.handlers: dict[str, Callable[[str, dict[str, Any]], list[Any]]] = {
            "job_request": self.request,
            "job_assignment": self.assign,
        }

    def request(self, sender: str, p: dict[str, Any]) -> list[Any]:
        if self.status != "available":
            return [(sender, {"app_message_type": "job_response", "job_id": p["job_id"], "accepted": False})]
        self.status, self.held = "reserved", (p["job_id"], sender)
        return [(sender, {"app_message_type": "job_response", "job_id": p["job_id"], "accepted": True})]

    def assign(self, sender: str, p: dict[str, Any]) -> list[Any]:
        if self.status == "reserved" and self.held == (p["job_id"], sender):
            self.status, self.seq = "busy", 0
        return []

    def handle(self, event: Event, now: float) -> list[Any]:
        if isinstance(event, PeerMessage):
            payload: Any = event.payload
            return self.handlers[payload["app_message_type"]](event.sender, payload)
        assert self.held is not None
        self.seq += 1
        if isinstance(event, InputsReady):
            return [("start", event.job_id)]
        if isinstance(event, RunSucceeded):
            self.status = "available"
        job_id: str = getattr(event, "job_id")  # noqa: B009  # the run events of this benchmark all name a job
        return [(self.held[1], {"job_id": job_id, "seq": self.seq})]


def rate(handle: Callable[[Event, float], list[Any]], events: list[Event]) -> float:
    start = time.perf_counter()
    for now, event in enumerate(events):
        handle(event, float(now) * 1e-3)
    return len(events) / (time.perf_counter() - start)


def journaled_rate(events: list[Event], group: int) -> float:
    """Events/s of the coordinator behind the journal, committing every `group` events."""
    from fsm_worker.worker.journal import Journal, JournaledCore  # not in older trees (--against)

    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "journal.sqlite", {"bench": 1})
        core = JournaledCore(JobCoordinator(CAPS), journal)
        start = time.perf_counter()
        for n, event in enumerate(events, 1):
            core.handle(event, float(n) * 1e-3)
            if n % group == 0:
                core.commit()
        core.commit()
        elapsed = time.perf_counter() - start
        journal.close()
    return len(events) / elapsed


def _round(tree: str, cycles: int) -> float:
    """One measurement of the coordinator in checkout `tree`, in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": tree}
    command = [sys.executable, __file__, "--single", "--cycles", str(cycles)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True, cwd=tree).stdout
    return float(out.split()[-1])


def against(other: str, cycles: int, rounds: int) -> None:
    here = str(Path(__file__).resolve().parent.parent)
    rates: dict[str, list[float]] = {here: [], other: []}
    for n in range(rounds):  # ABBA: A B B A A B B A ...
        order = (here, other) if n % 2 == 0 else (other, here)
        for tree in order:
            rates[tree].append(_round(tree, cycles))
    ours, theirs = statistics.median(rates[here]), statistics.median(rates[other])
    print(f"{'coordinator':<34}{'events/s (median)':>20}")
    print(f"{'baseline: ' + other:<34}{theirs:>20,.0f}")
    print(f"{'this tree':<34}{ours:>20,.0f}")
    print(f"ratio this/baseline: {ours / theirs:.3f} ({rounds} rounds each, ABBA, {cycles} cycles per round)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="ABBA rounds; best of 2N runs for each side (the machine is noisy)",
    )
    parser.add_argument("--against", metavar="DIR", help="another checkout to compare the coordinator with")
    parser.add_argument("--rounds", type=int, default=8, help="with --against: rounds per tree")
    parser.add_argument("--group", type=int, default=11, help="events per commit in the group-commit row")
    parser.add_argument("--quick", action="store_true", help="fewer cycles and rounds")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)  # one round, for --against
    args = parser.parse_args()
    if args.against:
        against(str(Path(args.against).resolve()), args.cycles, args.rounds)
        return
    if args.quick:
        args.cycles, args.repeat = min(args.cycles, 1000), min(args.repeat, 2)
    events = workload(args.cycles)
    if args.single:
        print(max(rate(JobCoordinator(CAPS).handle, events) for _ in range(2)))
        return
    ours_runs: list[float] = []
    bare_runs: list[float] = []
    each_runs: list[float] = []
    group_runs: list[float] = []
    for _ in range(args.repeat):  # ABBA: ours, bare, bare, ours, so a slow spell hits both alike
        ours_runs.append(rate(JobCoordinator(CAPS).handle, events))
        bare_runs += [rate(BareMachine().handle, events) for _ in range(2)]
        ours_runs.append(rate(JobCoordinator(CAPS).handle, events))
        each_runs.append(journaled_rate(events, 1))  # then ABBA of journaled vs plain: J J P P J J
        group_runs.append(journaled_rate(events, args.group))
        ours_runs += [rate(JobCoordinator(CAPS).handle, events) for _ in range(2)]
        group_runs.append(journaled_rate(events, args.group))
        each_runs.append(journaled_rate(events, 1))
    ours, bare = max(ours_runs), max(bare_runs)
    each, grouped = max(each_runs), max(group_runs)
    print(f"{'machine':<34}{'events/s':>12}{'vs bare':>10}")
    print(f"{'bare dict dispatch (baseline)':<34}{bare:>12,.0f}{1.0:>10.2f}")
    print(f"{'JobCoordinator (transitions)':<34}{ours:>12,.0f}{ours / bare:>10.3f}")
    print(f"spread over {len(ours_runs)} runs each: ours {min(ours_runs):,.0f}-{max(ours_runs):,.0f}, "
          f"bare {min(bare_runs):,.0f}-{max(bare_runs):,.0f}")  # fmt: skip
    print(f"{'journaled, commit per event':<34}{each:>12,.0f}{each / bare:>10.3f}")
    print(f"{f'journaled, group commit ({args.group})':<34}{grouped:>12,.0f}{grouped / bare:>10.3f}")
    print(
        f"target >= {TARGET_EVENTS_PER_SECOND:,} events/s: {'met' if ours >= TARGET_EVENTS_PER_SECOND else 'MISSED'}"
    )
    for name, value in (("commit per event", each), ("group commit", grouped)):
        cost = ours / value
        met = value >= TARGET_JOURNALED_EVENTS_PER_SECOND and cost < TARGET_JOURNAL_COST
        print(f"journal ({name}): {value:,.0f} events/s, cost {cost:.2f}x the plain coordinator "
              f"(target >= {TARGET_JOURNALED_EVENTS_PER_SECOND:,} and < {TARGET_JOURNAL_COST:g}x): "
              f"{'met' if met else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
