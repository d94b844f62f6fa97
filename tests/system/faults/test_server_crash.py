"""Server crash: the signaling server process is SIGKILLed mid-job and restarted on the same port."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from rooms import TIMEOUT, Room, advertised, eventually, holds
from support.signaling import free_port, start_server_process

from fsm_worker.client import Job
from fsm_worker.protocol.messages import JobComplete, JobStatus, to_wire

from .conftest import SendLog, idle, record_sends


async def first_running(job: Job) -> None:
    async with asyncio.timeout(TIMEOUT):
        async for event in job.events():
            if isinstance(event, JobStatus) and event.status == "running":
                return
    raise AssertionError("the job ended before it reported running")


def job_events_sent(sent: SendLog, client_id: str, job_id: str) -> list[dict[str, Any]]:
    """The job's numbered events as the worker sent them, each once (replays must repeat them exactly)."""
    by_seq: dict[int, dict[str, Any]] = {}
    for to, payload in sent:
        if to == client_id and payload.get("job_id") == job_id and "seq" in payload:
            assert by_seq.setdefault(payload["seq"], payload) == payload, "a replay differs from the original"
    return [by_seq[seq] for seq in sorted(by_seq)]


async def test_server_sigkill_mid_job_loses_and_duplicates_no_event(tmp_path: Path) -> None:
    token, port = secrets.token_hex(12), free_port()
    server = await start_server_process([token], port=port)
    room = Room(token, port, tmp_path)  # the room's factories, with the server in its own process
    try:
        worker = await room.worker()
        sent = record_sends(worker)
        client = await room.client(liveness=1.0)
        job = await client.submit("ticker")
        await first_running(job)

        await server.kill()
        await eventually(holds(lambda: not worker.signaling.connected and not client.signaling.connected))
        await asyncio.sleep(0.8)  # the job keeps ticking (≈ 3 events) while no server is there
        server = await start_server_process([token], port=port)

        outcome = await job.result(tmp_path / "out")
        assert (tmp_path / "out" / "ticks.txt").read_text() == "12 ticks\n" and outcome.files
        seqs = [event.seq for event in job.history]
        assert seqs == list(range(1, len(seqs) + 1)), "events lost, duplicated or out of order"
        assert isinstance(job.history[-1], JobComplete)
        assert [to_wire(event) for event in job.history] == job_events_sent(sent, client.peer_id, job.job_id)
        assert len(job.history) >= 4
        # Both peers came back under their ids; the worker is free again and says so.
        assert worker.signaling.reconnects >= 1 and client.signaling.reconnects >= 1
        await eventually(holds(lambda: idle(worker)))
        await eventually(lambda: _available(room, client.signaling))
    finally:
        await room.close()
        await server.stop()


async def _available(room: Room, peer: Any) -> bool:
    return bool((await advertised(peer, "worker-1")).get("status") == "available")
