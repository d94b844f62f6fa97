"""Race: 200 raw clients ask 20 workers for jobs at once through one server process.

The worker's own send log (in the order its one outbox sends) is the ground truth for "reserved for at
most one job at a time"; the clients check what they received against it.
"""

from __future__ import annotations

import asyncio
import collections
import random
import secrets
from pathlib import Path
from typing import Any

import attrs
from rooms import TIMEOUT, Inbox, eventually, holds, job_types
from support.job_keys import keyed, keyed_request
from support.signaling import start_server_process

from fsm_worker.protocol.worker.events import Event
from fsm_worker.protocol.worker.instructions import Instruction
from fsm_worker.protocol.worker.states import WorkerStatus
from fsm_worker.shells.signaling import SignalingClient
from fsm_worker.worker import WorkerConfig, WorkerHost

from .conftest import SendLog, idle, probe, record_sends

CLIENTS, WORKERS, ROUNDS, FANOUT = 200, 20, 2, 3
LEASE = 1.5  # reservation_timeout of every worker (under load some leases run out before the client acts)
INPUTS = 1.0  # input_timeout of every worker
TERMINALS = ("job_cancelled", "reservation_expired", "job_failed", "job_complete")


@attrs.define
class Outcome:
    """What one client saw of one (worker, job)."""

    responses: list[dict[str, Any]] = attrs.field(factory=list)
    after: list[dict[str, Any]] = attrs.field(factory=list)  # what followed an acceptance
    action: str = ""

    @property
    def settled(self) -> bool:
        """Answered, and an acceptance has ended. If the lease ran out before an assignment arrived, the
        late assignment is refused too (`INVALID_ASSIGNMENT`); a late cancel is ignored."""
        if not self.responses:
            return False
        if not self.action:
            return True
        kinds = [payload["app_message_type"] for payload in self.after]
        if kinds[:1] == ["reservation_expired"] and self.action.startswith("assign"):
            return kinds == ["reservation_expired", "app_error"]
        return len(kinds) == 1


def check_core_invariants(host: WorkerHost, violations: list[str]) -> None:
    """After every event the worker's core takes: reserved ⇔ one reservation, busy ⇔ one current job."""
    original = host.core.handle

    def handle(event: Event, now: float) -> list[Instruction]:
        out = original(event, now)
        core = host.core
        if (core.status is WorkerStatus.RESERVED) != (core.reservation is not None):
            violations.append(f"{host.peer_id}: {core.status} with reservation {core.reservation}")
        if (core.status is WorkerStatus.BUSY) != (core.current_job is not None):
            violations.append(f"{host.peer_id}: {core.status} with current job {core.current_job}")
        return out

    setattr(host.core, "handle", handle)  # noqa: B010


def check_send_log(worker_id: str, sent: SendLog) -> set[tuple[str, str]]:
    """At most one acceptance outstanding at any time; each one ends in exactly one terminal message.

    Returns the accepted (client, job) pairs.
    """
    held: tuple[str, str] | None = None
    accepted: set[tuple[str, str]] = set()
    ended: collections.Counter[tuple[str, str]] = collections.Counter()
    responses: collections.Counter[tuple[str, str]] = collections.Counter()
    for to, payload in sent:
        key, kind = (to, payload.get("job_id", "")), payload["app_message_type"]
        if kind == "job_response":
            responses[key] += 1
            if payload["accepted"]:
                assert held in (None, key), f"{worker_id} accepted {key} while holding {held}"
                held = key
                accepted.add(key)
        elif kind in TERMINALS:
            assert held == key, f"{worker_id} sent {kind} for {key} while holding {held}"
            held, ended[key] = None, ended[key] + 1
    assert held is None, f"{worker_id} still holds {held}"
    assert all(count == 1 for count in responses.values()), f"{worker_id}: repeated responses {responses}"
    assert set(ended) == accepted and all(count == 1 for count in ended.values()), worker_id
    return accepted


async def client_rounds(
    peer: SignalingClient, inbox: Inbox, workers: list[str], rng: random.Random
) -> dict[tuple[str, str], Outcome]:
    """ROUNDS of: ask FANOUT workers, keep the first acceptance (assign it, then cancel it or let its inputs
    time out; or cancel the reservation; or let the lease run out), release the other acceptances."""
    seen: dict[tuple[str, str], Outcome] = {}
    for round_no in range(ROUNDS):
        job_id = f"{peer.peer_id}-r{round_no}"
        asked = rng.sample(workers, FANOUT)
        await asyncio.sleep(rng.random() * 0.2)
        request = keyed_request(job_id, "ticker")
        results = await asyncio.gather(*(peer.send(worker, request) for worker in asked))
        assert all(result.delivered for result in results), results
        outcomes = {worker: seen.setdefault((worker, job_id), Outcome()) for worker in asked}
        winner: str | None = None

        async with asyncio.timeout(TIMEOUT):
            while not all(outcome.settled for outcome in outcomes.values()):
                sender, payload = await inbox.next()
                assert sender in outcomes and payload["job_id"] == job_id, payload
                outcome = outcomes[sender]
                if payload["app_message_type"] != "job_response":
                    assert outcome.action and not outcome.settled, (payload, outcome)
                    outcome.after.append(payload)
                    continue
                outcome.responses.append(payload)
                if not payload["accepted"]:
                    assert payload["reason"] == "busy", payload
                    continue
                if winner is None:
                    winner = sender
                    outcome.action = rng.choice(("assign-cancel", "assign-timeout", "cancel", "lease"))
                else:
                    outcome.action = "cancel"  # a losing bid is released at once, as JobClient does
                if outcome.action.startswith("assign"):
                    await peer.send(sender, keyed("job_assignment", job_id))
                if outcome.action in ("assign-cancel", "cancel"):
                    await peer.send(sender, keyed("job_cancel", job_id))
    return seen


#: The terminal message each action calls for; under load the lease may run out first for any of them.
EXPECTED_TERMINAL = {
    "assign-cancel": "job_cancelled",
    "cancel": "job_cancelled",
    "lease": "reservation_expired",
    "assign-timeout": "job_failed",
}


async def test_200_clients_race_for_20_workers(tmp_path: Path) -> None:
    token = secrets.token_hex(12)
    server = await start_server_process([token], log_level="INFO")
    hosts: list[WorkerHost] = []
    peers: list[tuple[SignalingClient, Inbox]] = []
    try:
        violations: list[str] = []
        logs: dict[str, SendLog] = {}
        for index in range(WORKERS):
            peer_id = f"w{index:02d}"
            config = WorkerConfig(
                server.url, token, peer_id, workdir=tmp_path / peer_id, gpu_memory_mb=8192,
                loopback_only=True, reservation_timeout=LEASE, input_timeout=INPUTS,
            )  # fmt: skip
            host = WorkerHost(config, job_types())
            hosts.append(host)
            logs[peer_id] = record_sends(host)
            check_core_invariants(host, violations)
            await host.start()
        worker_ids = [host.peer_id for host in hosts]

        gate = asyncio.Semaphore(25)

        async def connect(index: int) -> tuple[SignalingClient, Inbox]:
            inbox = Inbox()
            peer = SignalingClient(server.url, token, f"c{index:03d}", on_peer_message=inbox)
            async with gate:
                await peer.connect(timeout=TIMEOUT)
            return peer, inbox

        peers = list(await asyncio.gather(*(connect(index) for index in range(CLIENTS))))
        async with asyncio.timeout(60), asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(client_rounds(peer, inbox, worker_ids, random.Random(n)))
                for n, (peer, inbox) in enumerate(peers)
            ]
        seen_by_client = [task.result() for task in tasks]

        # Every worker gets free again, and says so in discovery.
        await eventually(holds(lambda: all(idle(host) for host in hosts)))
        observer, observer_inbox = peers[0]
        for worker_id in worker_ids:
            await probe(observer, observer_inbox, worker_id)  # the worker's outbox has drained
        found = await observer.discover({"role": "worker"})
        assert sorted(p["peer_id"] for p in found) == worker_ids
        for p in found:
            properties = p["metadata"]["properties"]
            assert properties["status"] == "available" and "job_id" not in properties, p
        assert violations == []

        accepted_by_worker = {
            worker_id: check_send_log(worker_id, logs[worker_id]) for worker_id in worker_ids
        }
        accepted_total = sum(len(pairs) for pairs in accepted_by_worker.values())
        assert accepted_total >= WORKERS  # the race really reserved every worker at least once

        # What each client received matches what each worker sent it: one response per request, and
        # for each acceptance the one terminal message its action calls for.
        requests = expired = 0
        for (peer, _), seen in zip(peers, seen_by_client, strict=True):
            for (worker_id, job_id), outcome in seen.items():
                requests += 1
                (response,) = outcome.responses
                expected = [p for to, p in logs[worker_id] if to == peer.peer_id and p["job_id"] == job_id]
                assert expected[0] == response
                if response["accepted"]:
                    assert (peer.peer_id, job_id) in accepted_by_worker[worker_id]
                    terminal = outcome.after[0]
                    kind = terminal["app_message_type"]
                    assert kind in (EXPECTED_TERMINAL[outcome.action], "reservation_expired"), outcome
                    if kind == "reservation_expired" and outcome.action.startswith("assign"):
                        assert outcome.after[1]["code"] == "INVALID_ASSIGNMENT", outcome
                    if kind == "job_failed":
                        assert terminal["error"]["code"] == "INPUT_TIMEOUT"
                    expired += kind == "reservation_expired" and outcome.action != "lease"
                    assert expected[1:] == outcome.after
                else:
                    assert outcome.after == [] and expected == [response]
        assert requests == CLIENTS * ROUNDS * FANOUT
        print(
            f"{requests} requests, {accepted_total} acceptances, {expired} leases ran out before the client acted"
        )
        assert all(host.status is WorkerStatus.AVAILABLE for host in hosts)
    finally:
        for peer, _ in peers:
            await peer.close()
        for host in hosts:
            async with asyncio.timeout(TIMEOUT):
                await host.shutdown()
        await server.stop()
