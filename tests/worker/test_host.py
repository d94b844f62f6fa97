"""The worker host's shells, driven through the real core: the order of what leaves, tasks that feed back,
the data-channel shell's files. No signaling server: a recorder stands in for the link (one layer only)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from support.job_keys import keyed, keyed_request

from fsm_worker.jobs.registry import JobTypeRegistry, StaticCommandHandler
from fsm_worker.protocol.worker.events import (
    ChannelFailed,
    InputsReady,
    JobFilesRemoved,
    PeerMessage,
    RunStarted,
    RunSucceeded,
)
from fsm_worker.protocol.worker.instructions import AcceptOffer
from fsm_worker.protocol.worker.states import Intake, WorkerState, WorkerStatus
from fsm_worker.shells.rtc.options import RtcOptions
from fsm_worker.shells.rtc.peer import install_rtc_patches
from fsm_worker.shells.signaling import SendResult, SendStatus
from fsm_worker.worker.channels import JobChannels
from fsm_worker.worker.config import WorkerConfig
from fsm_worker.worker.host import WorkerHost
from fsm_worker.worker.outbox import Outbox


class RecordingLink:
    """Stands in for `SignalingClient` under the outbox: records what would leave, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def post(self, to: str, payload: Mapping[str, Any]) -> asyncio.Future[SendResult]:
        self.sent.append(("send", (to, payload["app_message_type"])))
        future: asyncio.Future[SendResult] = asyncio.get_running_loop().create_future()
        future.set_result(SendResult(SendStatus.DELIVERED))
        return future

    async def update_metadata(self, metadata: dict[str, Any]) -> None:
        self.sent.append(("meta", metadata["properties"]["status"]))


def host_with_recorder(tmp_path: Path, **settings: Any) -> tuple[WorkerHost, RecordingLink]:
    registry = JobTypeRegistry()
    registry.register("sleep", StaticCommandHandler((sys.executable, "-c", "import time; time.sleep(60)")))
    config = WorkerConfig("http://127.0.0.1:9", "t", peer_id="w", workdir=tmp_path, journal=False, **settings)
    host = WorkerHost(config, registry)  # the plain feed: each event carried out as it is handled
    link = RecordingLink()
    host.outbox = Outbox(link)  # type: ignore[arg-type]
    host.outbox.start()
    return host, link


def message(kind: str, **fields: Any) -> dict[str, Any]:
    """A message about job-1 from its client: the request carries the key's hash, the others the key."""
    if kind == "job_request":
        return keyed_request("job-1", **fields)
    return keyed(kind, "job-1", **fields)


async def test_the_status_leaves_before_the_messages_that_follow_from_it(tmp_path: Path) -> None:
    host, link = host_with_recorder(tmp_path)
    host._feed(PeerMessage("client", message("job_request", job_type="sleep")))
    host._feed(PeerMessage("client", message("job_cancel")))
    await host.outbox.close()
    assert link.sent == [
        ("meta", "reserved"),
        ("send", ("client", "job_response")),
        ("meta", "available"),
        ("send", ("client", "job_cancelled")),
    ]


async def start_a_run(host: WorkerHost) -> None:
    """job-1 (a real `sleep` subprocess) is assigned, its inputs are in, and its run reported started."""
    host._feed(PeerMessage("client", message("job_request", job_type="sleep")))
    host._feed(PeerMessage("client", message("job_assignment")))
    host.channels.job_dir("job-1").mkdir(parents=True)
    (host.channels.job_dir("job-1") / "inputs").mkdir()
    host._feed(InputsReady("job-1"))

    async def running() -> None:  # the runner reports RunStarted through the host
        while host.core.state is not WorkerState.RUNNING:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(running(), 30)


async def test_a_stopped_run_feeds_its_end_back_to_the_core(tmp_path: Path) -> None:
    """StartRun runs a real subprocess; the cancel's StopRun task ends by feeding RunStopped to the core."""
    host, link = host_with_recorder(tmp_path)
    await start_a_run(host)
    host._feed(PeerMessage("client", message("job_cancel")))

    async def ended() -> None:  # the StopRun task feeds RunStopped; the core lets the job go
        while host.status is not WorkerStatus.AVAILABLE:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(ended(), 30)
    assert host.status is WorkerStatus.AVAILABLE and host.runs.runner.running == []
    await host.outbox.close()
    kinds = [body for kind, body in link.sent if kind == "send"]
    assert kinds == [
        ("client", "job_response"),
        ("client", "job_status"),
        ("client", "job_cancelled"),
    ]
    await host.runs.shutdown()


async def test_results_are_served_only_once_published(tmp_path: Path) -> None:
    channels = JobChannels(tmp_path, lambda event: None, rtc_options=RtcOptions(), max_upload_bytes=1024)
    outputs = channels.job_dir("job-1") / "outputs"
    outputs.mkdir(parents=True)
    (outputs / "model.npz").write_bytes(b"x")
    assert channels._results("job-1") is None
    channels.publish("job-1")
    assert channels._results("job-1") == [outputs / "model.npz"]
    assert await channels.remove("job-1") == JobFilesRemoved("job-1")
    assert not channels.job_dir("job-1").exists() and channels._results("job-1") is None


async def test_an_offer_for_finished_results_serves_them_at_once(tmp_path: Path) -> None:
    install_rtc_patches()  # what the host's start() does
    fed: list[object] = []
    channels = JobChannels(
        tmp_path, fed.append, rtc_options=RtcOptions(), max_upload_bytes=1024, setup_timeout=0.5
    )
    offer = AcceptOffer("job-1", "client", "not an sdp", {}, inputs_committed=True, results_ready=True)
    failed = await channels.open(offer)
    assert (
        isinstance(failed, ChannelFailed) and failed.client_id == "client" and fed == []
    )  # a bad offer: no answer, the core decides
    assert channels._results("job-1") == []  # published: an empty outputs directory is an empty result


# --- shutdown: the core drains and says `Drained`; the host then closes its IO --------------------------------


def sends(link: RecordingLink) -> list[tuple[str, str]]:
    return [body for kind, body in link.sent if kind == "send"]


async def test_an_idle_host_shuts_down_at_once(tmp_path: Path) -> None:
    host, link = host_with_recorder(tmp_path)
    await asyncio.wait_for(host.shutdown(), 30)
    assert host._closed.is_set() and host.core.intake is Intake.DRAINED and sends(link) == []


async def test_shutdown_with_the_cancel_policy_stops_the_run_before_closing(tmp_path: Path) -> None:
    host, link = host_with_recorder(tmp_path, shutdown_policy="cancel")
    await start_a_run(host)
    await asyncio.wait_for(host.shutdown(), 30)
    assert host._closed.is_set() and host.runs.runner.running == []
    assert sends(link) == [("client", "job_response"), ("client", "job_status"), ("client", "job_failed")]


async def test_a_run_past_the_shutdown_timeout_is_stopped_by_the_cores_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The finish policy waits for the run; at the core's drain deadline (shutdown_timeout) it is stopped."""
    host, link = host_with_recorder(tmp_path, shutdown_timeout=0.2)
    await start_a_run(host)
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(host.shutdown(), 30)
    assert "the current job did not end within 0 s; stopping it" in caplog.text
    assert sends(link)[-1] == ("client", "job_failed") and host.runs.runner.running == []


async def test_a_second_shutdown_stops_the_run_the_first_waits_for(tmp_path: Path) -> None:
    host, link = host_with_recorder(tmp_path)  # the finish policy, shutdown_timeout 300 s
    await start_a_run(host)
    first = asyncio.create_task(host.shutdown())
    while not host.core.draining:
        await asyncio.sleep(0.01)
    assert not first.done() and host.core.state is WorkerState.RUNNING  # waiting for the run to finish
    await asyncio.wait_for(host.shutdown(), 30)  # a second Ctrl+C
    await asyncio.wait_for(first, 30)
    assert sends(link)[-1] == ("client", "job_failed") and host.runs.runner.running == []


async def test_start_keeps_only_the_job_dirs_the_core_holds(tmp_path: Path) -> None:
    """`Started`: the core names the jobs whose directories stay (held, or retained with their files)."""
    host, _ = host_with_recorder(tmp_path)
    now = asyncio.get_running_loop().time()  # the host's clock
    for event in (  # the core alone (no shells): job-1 ran and is retained with its files; job-2 is assigned
        PeerMessage("client", keyed_request("job-1", "sleep")),
        PeerMessage("client", message("job_assignment")),
        InputsReady("job-1"),
        RunStarted("job-1"),
        RunSucceeded("job-1", 1.0, None),
        PeerMessage("client", keyed_request("job-2", "sleep")),
        PeerMessage("client", keyed("job_assignment", "job-2")),
    ):
        host.core.handle(event, now)
    for job_id in ("job-1", "job-2", "stale"):
        (host.job_dir(job_id) / "inputs").mkdir(parents=True)
    await host._prepare()
    left = sorted(path.name for path in (tmp_path / "jobs").iterdir())
    assert left == sorted(host.job_dir(job_id).name for job_id in ("job-1", "job-2"))
