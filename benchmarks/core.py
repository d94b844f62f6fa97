"""Core events/s: the coordinator (parse + guards + outbox) vs a bare dict-dispatch machine, same protocol.

Run: `python benchmarks/core.py [--cycles N]`. Both sides process the same stream of events: per job cycle a
request, a competing request (rejected busy), an assignment, inputs ready, run start, 5 progress reports and
success — 11 events. Prints events/s for each and the ratio (same run, same machine).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from fsm_worker.protocol.messages import JobResult
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


def workload(cycles: int) -> list[Event]:
    events: list[Event] = []
    for n in range(cycles):
        job = f"job-{n}"
        request = {
            "app_message_type": "job_request",
            "job_id": job,
            "job_type": "train-demo",
            "config": {"epochs": 5},
        }
        events += [
            PeerMessage("client", request),
            PeerMessage("rival", {**request, "job_id": f"rival-{n}"}),
            PeerMessage("client", {"app_message_type": "job_assignment", "job_id": job}),
            InputsReady(job),
            RunStarted(job),
            *(RunProgress(job, step / 6, f"epoch {step}") for step in range(1, 6)),
            RunSucceeded(job, JobResult(0.1, 0.01)),
        ]
    return events


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
        return [(self.held[1], {"job_id": event.job_id, "seq": self.seq})]


def rate(handle: Callable[[Event, float], list[Any]], events: list[Event]) -> float:
    start = time.perf_counter()
    for now, event in enumerate(events):
        handle(event, float(now) * 1e-3)
    return len(events) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="ABBA rounds; best of 2N runs for each side (the machine is noisy)",
    )
    args = parser.parse_args()
    events = workload(args.cycles)
    ours_runs: list[float] = []
    bare_runs: list[float] = []
    for _ in range(args.repeat):  # ABBA: ours, bare, bare, ours, so a slow spell hits both alike
        ours_runs.append(rate(JobCoordinator(CAPS).handle, events))
        bare_runs += [rate(BareMachine().handle, events) for _ in range(2)]
        ours_runs.append(rate(JobCoordinator(CAPS).handle, events))
    ours, bare = max(ours_runs), max(bare_runs)
    print(f"{'machine':<34}{'events/s':>12}{'vs bare':>10}")
    print(f"{'bare dict dispatch (baseline)':<34}{bare:>12,.0f}{1.0:>10.2f}")
    print(f"{'JobCoordinator (transitions)':<34}{ours:>12,.0f}{ours / bare:>10.3f}")
    print(f"spread over {len(ours_runs)} runs each: ours {min(ours_runs):,.0f}-{max(ours_runs):,.0f}, "
          f"bare {min(bare_runs):,.0f}-{max(bare_runs):,.0f}")  # fmt: skip
    print(
        f"target >= {TARGET_EVENTS_PER_SECOND:,} events/s: {'met' if ours >= TARGET_EVENTS_PER_SECOND else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
