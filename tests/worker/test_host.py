"""The worker host's shells, driven through the real core: the order of what leaves, tasks that feed back,
the data-channel shell's files. No signaling server: a recorder stands in for the link (one layer only)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from support.job_keys import keyed, keyed_request

from fsm_worker.jobs.registry import JobTypeRegistry, StaticCommandHandler
from fsm_worker.protocol.worker.events import (
    AcceptOffer,
    ChannelFailed,
    InputsReady,
    JobFilesRemoved,
    PeerMessage,
    WorkerState,
    WorkerStatus,
)
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


def host_with_recorder(tmp_path: Path) -> tuple[WorkerHost, RecordingLink]:
    registry = JobTypeRegistry()
    registry.register("sleep", StaticCommandHandler((sys.executable, "-c", "import time; time.sleep(60)")))
    config = WorkerConfig("http://127.0.0.1:9", "t", peer_id="w", workdir=tmp_path, journal=False)
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


async def test_a_stopped_run_feeds_its_end_back_to_the_core(tmp_path: Path) -> None:
    """StartRun runs a real subprocess; the cancel's StopRun task ends by feeding RunStopped to the core."""
    host, link = host_with_recorder(tmp_path)
    host._feed(PeerMessage("client", message("job_request", job_type="sleep")))
    host._feed(PeerMessage("client", message("job_assignment")))
    host.channels.job_dir("job-1").mkdir(parents=True)
    (host.channels.job_dir("job-1") / "inputs").mkdir()
    host._feed(InputsReady("job-1"))

    async def running() -> None:  # the runner reports RunStarted through the host
        while host.core.state is not WorkerState.RUNNING:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(running(), 30)
    host._feed(PeerMessage("client", message("job_cancel")))
    await asyncio.wait_for(host._idle.wait(), 30)
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
