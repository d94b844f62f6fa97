"""Prometheus `/metrics` of the server and the worker, scraped before and after real traffic and a real job."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from prometheus_client.parser import text_string_to_metric_families
from rooms import Room, eventually

from fsm_worker.protocol.messages import JobComplete
from fsm_worker.protocol.worker.states import WorkerStatus


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a `/metrics` page, keyed by name and sorted labels."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_server_counts_routing_refusals_discovery_and_peers_by_role(room: Room) -> None:
    url = f"{room.url}/metrics"
    before = await scrape(url)
    assert before[("fsm_server_peers", (("role", "worker"),))] == 0
    sender, _ = await room.peer("sender")
    target, inbox = await room.peer("target")
    for index in range(5):
        result = await sender.send("target", {"app_message_type": "note", "n": index})
        assert result.delivered
    for _ in range(2):
        result = await sender.send("nobody", {"app_message_type": "note"})
        assert result.code == "PEER_NOT_FOUND"
    for _ in range(3):
        await sender.discover({"role": "worker"})
    stranger = socketio.AsyncClient(reconnection=False)
    refused = False
    try:
        await stranger.connect(
            room.url, auth={"token": "wrong", "peer_id": "x", "role": "client"}, wait_timeout=5
        )
    except socketio.exceptions.ConnectionError:
        refused = True
    assert refused
    await room.worker()
    after = await scrape(url)

    assert delta(before, after, "fsm_server_messages_routed_total") == 5
    assert delta(before, after, "fsm_server_refusals_total", code="PEER_NOT_FOUND", where="peer_message") == 2
    assert delta(before, after, "fsm_server_refusals_total", code="AUTH_FAILED", where="connect") == 1
    assert delta(before, after, "fsm_server_discovery_seconds_count") == 3
    assert delta(before, after, "fsm_server_connects_total") == 3  # sender, target, the worker
    assert after[("fsm_server_peers", (("role", "client"),))] == 2
    assert after[("fsm_server_peers", (("role", "worker"),))] == 1
    assert after[("fsm_server_connections", ())] >= 3
    assert delta(before, after, "fsm_server_rate_limited_total") == 0
    assert inbox.queue.qsize() == 5
    await target.close()
    await eventually(
        lambda: _value(url, "fsm_server_peers", role="client", expected=1.0)
    )  # a disconnect is seen at once


async def _value(url: str, name: str, expected: float, **labels: str) -> bool:
    return (await scrape(url)).get((name, tuple(sorted(labels.items())))) == expected


async def test_worker_counts_a_real_job_its_duration_and_bytes(room: Room, tmp_path: Path) -> None:
    worker = await room.worker(metrics_port=0)
    assert worker.metrics.port
    url = f"http://127.0.0.1:{worker.metrics.port}/metrics"
    before = await scrape(url)
    assert before[("fsm_worker_slots", ())] == 1
    assert before[("fsm_worker_queue_length", ())] == 0
    assert before[("fsm_worker_gpu_memory_bytes", ())] == 8192 * 1024 * 1024
    payload = tmp_path / "payload.bin"
    payload.write_bytes(bytes(range(256)) * 1000)  # 256,000 bytes
    client = await room.client()
    job = await client.submit("copy", {}, [payload])
    await job.result(tmp_path / "out")
    assert isinstance(job.terminal, JobComplete)
    assert (tmp_path / "out" / "payload.bin").read_bytes() == payload.read_bytes()
    await eventually(lambda: asyncio.sleep(0, worker.status is WorkerStatus.AVAILABLE))
    after = await scrape(url)

    assert delta(before, after, "fsm_worker_jobs_total", outcome="completed") == 1
    assert delta(before, after, "fsm_worker_jobs_total", outcome="failed") == 0
    assert delta(before, after, "fsm_worker_runs_started_total") == 1
    assert delta(before, after, "fsm_worker_job_duration_seconds_count", outcome="completed") == 1
    assert delta(before, after, "fsm_worker_job_duration_seconds_sum", outcome="completed") > 0
    assert delta(before, after, "fsm_worker_transfer_bytes_total", direction="upload") == 256_000
    assert delta(before, after, "fsm_worker_transfer_bytes_total", direction="download") == 256_000
    assert after[("fsm_worker_slots_busy", ())] == 0


async def test_a_failed_job_is_counted_once_even_when_replayed(room: Room, tmp_path: Path) -> None:
    worker = await room.worker(metrics_port=0)
    client = await room.client()
    job = await client.submit("exit-3")
    try:
        await job.result(tmp_path / "out")
    except Exception as error:  # the job fails by design
        assert "EXIT_NONZERO" in str(getattr(error, "code", error))
    peer, inbox = await room.peer("replayer")
    # A stranger's job_sync for the job is refused by the worker and must not count a second failure.
    await peer.send("worker-1", {"app_message_type": "job_sync", "job_id": job.job_id, "after_seq": 0})
    await inbox.next_of("app_error")
    samples = await scrape(f"http://127.0.0.1:{worker.metrics.port}/metrics")
    assert samples[("fsm_worker_jobs_total", (("outcome", "failed"),))] == 1
    assert samples[("fsm_worker_job_duration_seconds_count", (("outcome", "failed"),))] == 1


async def test_metrics_can_be_turned_off(room: Room) -> None:
    await room.stop_server()
    await room.start_server(metrics_enabled=False)
    async with aiohttp.ClientSession() as http, http.get(f"{room.url}/metrics") as response:
        assert response.status == 404
