"""Issue 10, item 5 over real processes: `fsm-worker server` and `fsm-worker worker` as separate processes,
one connection flooding the worker with `job_request`s, and an honest client that keeps talking to it.

The honest client is answered throughout (a barrier `job_sync` round trip, then a real `job_request` that the
worker accepts); the flooder meets `RATE_LIMITED` refusals naming the limit, and what the worker answers it is
bounded by what the server let through. (Before the bucket and the worker's pipelined sends, the honest round
trip took 33 s during such a flood; the waits below are liveness bounds, not timings.)
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from support import cli_processes
from support.job_keys import keyed_request
from support.signaling import Inbox, auth_for, free_port

from fsm_worker.shells.signaling import SignalingClient

TIMEOUT = 30.0
IN_FLIGHT = 64
FLOOD = {"app_message_type": "job_request", "job_id": "flood", "job_type": "no-such-type", "config": {}}


async def start(*args: str, ready: str) -> asyncio.subprocess.Process:
    return await cli_processes.start(*args, ready=ready, timeout=TIMEOUT)


async def stop(proc: asyncio.subprocess.Process) -> int:
    return await cli_processes.stop(proc, TIMEOUT)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    token, port = secrets.token_hex(12), free_port()
    url = f"http://127.0.0.1:{port}"
    server = await start("server", "--port", str(port), "--token", token, ready="listening on")
    try:
        worker = await start(
            "worker", "--server", url, "--token", token, "--peer-id", "gpu-1", "--gpu-memory-mb", "8192",
            "--workdir", str(tmp_path / "worker"), "--no-journal", ready="connected",
        )  # fmt: skip
        try:
            yield url, token
        finally:
            assert await stop(worker) == 0
    finally:
        await stop(server)


async def barrier(client: SignalingClient, inbox: Inbox) -> None:
    """One round trip to the worker: a `job_sync` for an unknown job is answered `UNKNOWN_JOB`."""
    marker = f"probe-{uuid.uuid4().hex[:8]}"
    await client.send("gpu-1", {"app_message_type": "job_sync", "job_id": marker, "after_seq": 0})
    while True:
        sender, payload = await inbox.next(timeout=TIMEOUT)
        if sender == "gpu-1" and payload.get("job_id") == marker:
            assert payload["code"] == "UNKNOWN_JOB"
            return


async def test_an_honest_client_is_answered_while_another_floods_the_worker(
    cluster: tuple[str, str],
) -> None:
    url, token = cluster
    honest_inbox = Inbox()
    honest = SignalingClient(url, token, "honest", on_peer_message=honest_inbox)
    await honest.connect()
    flooder = socketio.AsyncClient(reconnection=False)
    replies: list[dict[str, Any]] = []
    flooder.on("peer_message", lambda data: replies.append(data["payload"]))
    await flooder.connect(url, auth=auth_for(token, "flooder"), transports=["websocket"], wait_timeout=10)
    acks: list[dict[str, Any]] = []
    stop_flood = asyncio.Event()

    async def flood() -> None:
        async def one() -> None:
            ack = await flooder.call(
                "peer_message", {"to_peer_id": "gpu-1", "payload": FLOOD}, timeout=TIMEOUT
            )
            acks.append(ack)

        running: set[asyncio.Task[None]] = set()
        while not stop_flood.is_set():
            while len(running) < IN_FLIGHT:
                task = asyncio.create_task(one())
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*running, return_exceptions=True)

    flooding = asyncio.create_task(flood())
    try:
        async with asyncio.timeout(TIMEOUT):
            while not any(not a.get("ok") for a in acks):  # the flood has met the bucket
                await asyncio.sleep(0.05)
        for _ in range(20):  # the honest client keeps being answered while the flood goes on
            await barrier(honest, honest_inbox)
        request = keyed_request(
            "honest-job", "train-demo", config={}, requirements={"min_gpu_memory_mb": 4096}
        )
        assert (await honest.send("gpu-1", request)).delivered
        while True:
            sender, payload = await honest_inbox.next(timeout=TIMEOUT)
            if payload.get("app_message_type") == "job_response":
                break
        assert (sender, payload["job_id"], payload["accepted"]) == ("gpu-1", "honest-job", True)
    finally:
        stop_flood.set()
        await flooding
    refused = [a for a in acks if not a.get("ok")]
    admitted = len(acks) - len(refused)
    assert refused and {a["code"] for a in refused} == {"RATE_LIMITED"}
    assert "rate_limit_events_per_second=" in refused[0]["message"]
    with contextlib.suppress(TimeoutError):  # let the worker's last replies to the flooder arrive
        async with asyncio.timeout(2.0):
            while len(replies) < admitted:
                await asyncio.sleep(0.05)
    assert 0 < len(replies) <= admitted  # at most one reply per request the server let through
    assert {(r["app_message_type"], r.get("accepted")) for r in replies} == {("job_response", False)}
    await flooder.disconnect()
    await honest.close()
