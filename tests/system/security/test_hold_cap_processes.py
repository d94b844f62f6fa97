"""Issue 10, item 8 (room) over real processes: one member cannot hold every worker of the room.

`fsm-worker server --max-holds-per-client 2` and three `fsm-worker worker` processes. A greedy client reserves
and assigns (and never uploads) on every worker: the server grants two holds, the third worker refuses it
`room_cap` naming the cap, and an honest `fsm-worker submit` completes on the worker left free. When the greedy
client cancels one of its jobs, that hold is released and it may take another worker again.
(With `--max-holds-per-client 0`, the greedy client held all three workers and the honest submit failed.)
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support import cli_processes
from support.cli_processes import CLI
from support.job_keys import keyed, keyed_request
from support.signaling import Inbox, free_port

from fsm_worker.jobs.sample_data import generate_sample_csv
from fsm_worker.shells.signaling import SignalingClient

TIMEOUT = 60.0
CAP = 2
WORKERS = ("w1", "w2", "w3")


@pytest.fixture
async def room(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    token, port = secrets.token_hex(12), free_port()
    url = f"http://127.0.0.1:{port}"
    server = await cli_processes.start(
        "server", "--port", str(port), "--token", token, "--max-holds-per-client", str(CAP),
        ready="listening on", timeout=TIMEOUT,
    )  # fmt: skip
    workers: list[asyncio.subprocess.Process] = []
    try:
        for name in WORKERS:  # the first-input deadline is long: only the room cap frees a worker here
            workers.append(await cli_processes.start(
                "worker", "--server", url, "--token", token, "--peer-id", name, "--gpu-memory-mb", "8192",
                "--workdir", str(tmp_path / name), "--no-journal", "--first-input-timeout", "600",
                ready="connected", timeout=TIMEOUT,
            ))  # fmt: skip
        yield url, token
    finally:
        for worker in workers:
            await cli_processes.stop(worker, TIMEOUT)
        await cli_processes.stop(server, TIMEOUT)


async def ask(client: SignalingClient, inbox: Inbox, worker: str, job_id: str) -> dict[str, Any]:
    """Request `job_id` from `worker` (train-demo); assign it when accepted. Returns the `job_response`."""
    request = keyed_request(job_id, "train-demo")
    assert (await client.send(worker, request)).delivered
    while True:
        sender, payload = await inbox.next(timeout=TIMEOUT)
        if (
            sender == worker
            and payload.get("app_message_type") == "job_response"
            and payload["job_id"] == job_id
        ):
            break
    if payload["accepted"]:
        assignment = keyed("job_assignment", job_id)
        assert (await client.send(worker, assignment)).delivered
    return payload


async def submit(url: str, token: str, tmp_path: Path) -> tuple[int, str, str]:
    data = generate_sample_csv(tmp_path / "data.csv", rows=300, features=3, seed=2)
    proc = await asyncio.create_subprocess_exec(
        *CLI, "submit", "--server", url, "--token", token, "--job-type", "train-demo", "--input", str(data),
        "--config", "epochs=2", "--out", str(tmp_path / "results"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    async with asyncio.timeout(TIMEOUT):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_one_client_cannot_hold_every_worker_of_the_room(room: tuple[str, str], tmp_path: Path) -> None:
    url, token = room
    inbox = Inbox()
    greedy = SignalingClient(url, token, "greedy", on_peer_message=inbox)
    await greedy.connect(timeout=TIMEOUT)
    try:
        answers = {w: await ask(greedy, inbox, w, f"greedy-{w}") for w in WORKERS}
        accepted = [w for w, answer in answers.items() if answer["accepted"]]
        assert accepted == ["w1", "w2"], answers
        refused = answers["w3"]
        assert refused["reason"] == "room_cap", refused
        assert any(f"max_holds_per_client ({CAP})" in detail for detail in refused["details"]), refused

        code, out, err = await submit(url, token, tmp_path)
        assert code == 0, err
        assert "completed on w3" in out, out

        # the greedy client lets one job go: its hold is released, and it may take the free worker again
        cancel = keyed("job_cancel", "greedy-w1")
        assert (await greedy.send("w1", cancel)).delivered
        for attempt in range(50):  # the release travels beside the cancel's answer: retry until it counted
            answer = await ask(greedy, inbox, "w3", f"greedy-again-{attempt}")
            if answer["accepted"]:
                break
            assert not answer["accepted"] and answer["reason"] == "room_cap", answer
            await asyncio.sleep(0.1)
        assert answer["accepted"], answer
    finally:
        await greedy.close()


async def test_a_restarted_worker_claims_again_what_its_journal_holds(tmp_path: Path) -> None:
    """w1 (with its journal) holds a greedy job and is SIGKILLed; after the server dropped its holds (the grace
    ended), the restarted w1 re-syncs the job it restored, so the cap still counts it."""
    token, port = secrets.token_hex(12), free_port()
    url = f"http://127.0.0.1:{port}"
    server = await cli_processes.start(
        "server", "--port", str(port), "--token", token, "--max-holds-per-client", "1", "--resume-grace", "1",
        ready="listening on", timeout=TIMEOUT,
    )  # fmt: skip

    def worker_args(name: str) -> tuple[str, ...]:
        return (
            "worker", "--server", url, "--token", token, "--peer-id", name, "--gpu-memory-mb", "8192",
            "--workdir", str(tmp_path / name), "--journal", "--first-input-timeout", "600",
        )  # fmt: skip

    workers = {name: await cli_processes.start(*worker_args(name), ready="connected", timeout=TIMEOUT)
               for name in ("w1", "w2")}  # fmt: skip
    inbox = Inbox()
    greedy = SignalingClient(url, token, "greedy", on_peer_message=inbox)
    try:
        await greedy.connect(timeout=TIMEOUT)
        assert (await ask(greedy, inbox, "w1", "held-on-w1"))["accepted"]
        workers["w1"].kill()
        await workers["w1"].wait()
        # while w1 is down its hold counts through the grace; then the server drops it
        await asyncio.sleep(2.0)
        workers["w1"] = await cli_processes.start(*worker_args("w1"), ready="connected", timeout=TIMEOUT)
        for attempt in range(20):  # the restarted worker's sync follows its connect
            answer = await ask(greedy, inbox, "w2", f"second-{attempt}")
            if not answer["accepted"]:
                break
            cancel = keyed("job_cancel", f"second-{attempt}")
            assert (await greedy.send("w2", cancel)).delivered
            await asyncio.sleep(0.2)
        assert not answer["accepted"] and answer["reason"] == "room_cap", answer
    finally:
        await greedy.close()
        for proc in workers.values():
            await cli_processes.stop(proc, TIMEOUT)
        await cli_processes.stop(server, TIMEOUT)
