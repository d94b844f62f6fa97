"""Helpers of the fault and load tests, beyond the shared ones in `tests/rooms.py`: a message barrier
(`probe`), a record of what a worker sends, a raw data channel to a worker, and a worker host in its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from aiortc import RTCDataChannel, RTCPeerConnection
from rooms import SCRIPTS, TIMEOUT, Inbox, job_types
from support.job_keys import keyed, keyed_request

from fsm_worker.protocol.worker.states import WorkerStatus
from fsm_worker.shells.rtc.config import make_configuration
from fsm_worker.shells.rtc.loopback import use_loopback_candidates
from fsm_worker.shells.rtc.session import accept_answer, create_offer, wait_channel_open
from fsm_worker.shells.signaling import SendResult, SignalingClient
from fsm_worker.worker import WorkerHost

REPO = Path(__file__).resolve().parents[3]
#: Job types the test workers offer, never requested by hypothesis-generated payloads.
JOB_TYPES = tuple(job_types().names())


async def probe(peer: SignalingClient, inbox: Inbox, worker_id: str) -> list[dict[str, Any]]:
    """A barrier: everything `worker_id` sent `peer` before it answers a `job_sync` for an unknown job.

    The worker handles one peer's messages in order and sends its replies in order, so any reply to an
    earlier message arrives before the `UNKNOWN_JOB` error that ends the returned list.
    """
    marker = f"probe-{uuid.uuid4().hex[:10]}"
    result = await peer.send(worker_id, {"app_message_type": "job_sync", "job_id": marker, "after_seq": 0})
    assert result.delivered, result
    before: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT):
        while True:
            sender, payload = await inbox.next()
            if sender == worker_id and payload.get("job_id") == marker:
                assert payload["app_message_type"] == "app_error" and payload["code"] == "UNKNOWN_JOB"
                return before
            before.append(payload)


def idle(host: WorkerHost) -> bool:
    """The worker's core holds nothing: available, no reservation, no current job."""
    core = host.core
    return core.status is WorkerStatus.AVAILABLE and core.reservation is None and core.current_job is None


SendLog = list[tuple[str, dict[str, Any]]]


def record_sends(host: WorkerHost) -> SendLog:
    """Record every peer message the worker hands to its signaling client, in the order it sends them."""
    sent: SendLog = []
    original = host.signaling.post

    def post(to: str, payload: Mapping[str, Any]) -> asyncio.Future[SendResult]:
        sent.append((to, dict(payload)))
        return original(to, payload)

    setattr(host.signaling, "post", post)  # noqa: B010  (instance attribute shadows the method)
    return sent


async def open_raw_channel(
    peer: SignalingClient, inbox: Inbox, worker_id: str, job_id: str
) -> tuple[RTCPeerConnection, RTCDataChannel]:
    """Offer a data channel for `job_id` to the worker as `peer` and wait until it is open."""
    use_loopback_candidates(True)
    pc = RTCPeerConnection(make_configuration(()))
    channel, offer = await create_offer(pc, timeout=TIMEOUT)
    await peer.send(worker_id, keyed("rtc_offer", job_id, sdp=offer))
    answer = await inbox.next_of("rtc_answer")
    await accept_answer(pc, answer["sdp"], timeout=TIMEOUT)
    await wait_channel_open(pc, channel, timeout=TIMEOUT)
    return pc, channel


async def reserve_and_assign(
    peer: SignalingClient, inbox: Inbox, worker_id: str, job_id: str, job_type: str
) -> None:
    """As `peer`: request `job_id` from the worker (it must accept), then assign it; keyed with `TEST_JOB_KEY`."""
    assert (await peer.send(worker_id, keyed_request(job_id, job_type))).delivered
    response = await inbox.next_of("job_response")
    assert response["accepted"] is True, response
    assert (await peer.send(worker_id, keyed("job_assignment", job_id))).delivered


@attrs.define
class WorkerProcess:
    """A worker host in a child process (`scripts/worker_proc.py`); its runs append their pids to `pid_file`."""

    process: asyncio.subprocess.Process
    pid_file: Path

    @classmethod
    async def start(
        cls,
        url: str,
        token: str,
        peer_id: str,
        workdir: Path,
        *,
        journal: bool = False,
        kill_at: str = "",
        gpus: str = "auto",
        lifetime: str = "detached",
        log_max_bytes: int | None = None,
    ) -> WorkerProcess:
        pid_file = workdir.parent / f"{peer_id}.pids"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(REPO), str(REPO / "tests")))}
        env["FSM_TEST_WORKER_JOURNAL"] = "1" if journal else "0"
        env["FSM_WORKER_TEST_KILL_AT"] = kill_at  # tests/support/kill_points.py
        env["FSM_TEST_WORKER_GPUS"] = gpus  # fake GPUs, one slot each
        env["FSM_TEST_WORKER_LIFETIME"] = lifetime
        env["FSM_TEST_WORKER_LOG_MAX"] = "" if log_max_bytes is None else str(log_max_bytes)
        args = (url, token, peer_id, str(workdir), str(pid_file))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-u",
            str(SCRIPTS / "worker_proc.py"),
            *args,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(TIMEOUT):
                while (line := await proc.stdout.readline()) != b"READY\n":
                    if not line:
                        raise RuntimeError(f"worker process exited before READY (rc={await proc.wait()})")
        except BaseException:
            await cls(proc, pid_file).kill()
            raise
        return cls(proc, pid_file)

    async def kill(self) -> None:
        """SIGKILL the worker (a crash: no goodbye), then its orphaned runs."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.kill_runs()

    def kill_runs(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            for pid in self.pid_file.read_text().split():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid), signal.SIGKILL)
