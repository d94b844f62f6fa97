"""Client vanishes: while reserved the lease frees the worker; while running the job finishes and its
results wait for the client (retention), who may come back under the same peer id and fetch them."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from rooms import TIMEOUT, Inbox, Room, advertised, eventually, holds
from support.job_keys import keyed_request

from fsm_worker.client import Job, JobClient
from fsm_worker.protocol.messages import JobComplete, JobStatus, JobSync, to_wire
from fsm_worker.shells.signaling import SignalingClient

from .conftest import idle, probe, record_sends


async def available(peer: SignalingClient, worker_id: str = "worker-1") -> bool:
    properties = await advertised(peer, worker_id)
    return properties.get("status") == "available" and "job_id" not in properties


async def first_running(job: Job) -> None:
    async with asyncio.timeout(TIMEOUT):
        async for event in job.events():
            if isinstance(event, JobStatus) and event.status == "running":
                return
    raise AssertionError("the job ended before it reported running")


async def test_vanished_while_reserved_the_lease_frees_the_worker(room: Room) -> None:
    worker = await room.worker(reservation_timeout=0.5)
    sent = record_sends(worker)
    ghost, ghost_inbox = await room.peer("ghost")
    request = keyed_request("j-ghost", "ticker")
    assert (await ghost.send("worker-1", request)).delivered
    assert (await ghost_inbox.next_of("job_response"))["accepted"] is True
    await ghost.close()  # gone without assigning or cancelling

    observer, inbox = await room.peer("observer")
    await eventually(holds(lambda: idle(worker)))
    await eventually(lambda: available(observer))
    assert ("ghost", {"app_message_type": "reservation_expired", "job_id": "j-ghost"}) in sent
    # The worker takes the next job.
    assert (await observer.send("worker-1", {**request, "job_id": "j-next"})).delivered
    assert (await inbox.next_of("job_response"))["accepted"] is True


async def test_vanished_while_running_results_wait_for_the_same_peer_id(room: Room, tmp_path: Path) -> None:
    worker = await room.worker(retention=60.0)
    client = await room.client("returning-client")
    job = await client.submit("ticker")
    await first_running(job)
    secret = client.signaling.resume_secret
    await client.close()  # gone mid-run

    observer, inbox = await room.peer("observer")
    await eventually(holds(lambda: idle(worker)), timeout=30)  # the job ran to its end without its client
    await eventually(lambda: available(observer))
    assert (worker.job_dir(job.job_id) / "outputs" / "ticks.txt").is_file()
    # Kept for its own client only: a stranger can neither replay its events nor open a channel for it.
    await observer.send("worker-1", to_wire(JobSync(job.job_id, 0)))
    assert (await inbox.next_of("app_error"))["code"] == "UNKNOWN_JOB"
    await observer.send("worker-1", {"app_message_type": "rtc_offer", "job_id": job.job_id, "sdp": "v=0\r\n"})
    assert (await inbox.next_of("app_error"))["code"] == "NOT_ASSIGNED"

    # Back under the same peer id (presenting the resume secret, so the grace period does not matter).
    again = await room.client("returning-client", connect=False)
    again.signaling.resume_secret = secret
    await again.connect()
    # Re-attach with the job's key (the job core sends job_sync from 0; the explicit one below is a duplicate).
    revived = await again.attach(job.job_id, "worker-1", job_key=job.job_key)
    assert (
        await again.signaling.send("worker-1", to_wire(JobSync(job.job_id, 0, job_key=job.job_key)))
    ).delivered
    outcome = await revived.result(tmp_path / "out")
    assert (tmp_path / "out" / "ticks.txt").read_text() == "12 ticks\n"
    assert [event.seq for event in revived.history] == list(range(1, len(revived.history) + 1))
    assert isinstance(revived.history[-1], JobComplete) and len(revived.history) >= 3
    assert outcome.files and idle(worker)


async def test_results_are_removed_when_retention_ends(room: Room) -> None:
    worker = await room.worker(retention=0.5)
    client = await room.client("short-lived")
    job = await client.submit("ticker")
    secret = client.signaling.resume_secret
    await client.close()
    await eventually(holds(lambda: not worker.job_dir(job.job_id).exists() and idle(worker)), timeout=30)
    # The same client, back after retention: the job is gone, and a data channel for it is refused.
    inbox = Inbox()
    peer = SignalingClient(room.url, room.token, "short-lived", on_peer_message=inbox, resume_secret=secret)
    await peer.connect(timeout=TIMEOUT)
    room.closers.append(peer.close)
    await peer.send("worker-1", to_wire(JobSync(job.job_id, 0)))
    error = await inbox.next_of("app_error")
    assert (error["code"], error["job_id"]) == ("UNKNOWN_JOB", job.job_id)
    offer = {"app_message_type": "rtc_offer", "job_id": job.job_id, "sdp": "v=0\r\n"}
    await peer.send("worker-1", offer)
    error = await inbox.next_of("app_error")
    assert (error["code"], error["job_id"]) == ("NOT_ASSIGNED", job.job_id)
    assert await probe(peer, inbox, "worker-1") == []


async def test_reattach_public_api(room: Room, tmp_path: Path) -> None:
    await room.worker(retention=60.0, shutdown_policy="cancel")
    client = await room.client("comes-back")
    job = await client.submit("ticker")
    secret = client.signaling.resume_secret
    await client.close()
    again = JobClient(room.url, room.token, "comes-back", loopback_only=True, resume_secret=secret)  # type: ignore[call-arg]
    await again.connect()
    room.closers.append(again.close)
    revived = await again.attach(job.job_id, "worker-1", job_key=job.job_key)  # type: ignore[attr-defined]
    await revived.result(tmp_path / "out")
    digest = hashlib.sha256((tmp_path / "out" / "ticks.txt").read_bytes()).hexdigest()
    assert digest == hashlib.sha256(b"12 ticks\n").hexdigest()


async def test_after_the_grace_whoever_takes_the_id_cannot_read_the_job_without_its_key(
    room: Room, tmp_path: Path
) -> None:
    """Issue 10, item 1: the job's events and files are bound to its key, not to the client's peer id."""
    await room.worker(retention=60.0)
    alice = await room.client("alice")
    job = await alice.submit("ticker")
    outcome = await job.result(tmp_path / "alice")
    assert outcome.files and job.job_key
    key = job.job_key
    await alice.close()

    # Mallory takes the id once its resume grace is over (no secret needed then).
    async def taken() -> bool:
        try:
            mallory, inbox = await room.peer("alice")
        except Exception:
            return False
        taken.peer = (mallory, inbox)  # type: ignore[attr-defined]
        return True

    await eventually(taken, timeout=room.grace + TIMEOUT)
    mallory, inbox = taken.peer  # type: ignore[attr-defined]
    await mallory.send("worker-1", to_wire(JobSync(job.job_id, 0)))
    assert (await inbox.next_of("app_error"))["code"] == "UNKNOWN_JOB"
    offer = {"app_message_type": "rtc_offer", "job_id": job.job_id, "sdp": "v=0\r\n"}
    await mallory.send("worker-1", offer)
    assert (await inbox.next_of("app_error"))["code"] == "NOT_ASSIGNED"
    # By default a worker takes no keyless job either: Mallory's keyless request is refused, naming the setting.
    keyless = {"app_message_type": "job_request", "job_id": "keyless", "job_type": "ticker"}
    await mallory.send("worker-1", keyless)
    refused = await inbox.next_of("job_response")
    assert (refused["accepted"], refused["reason"]) == (False, "incompatible")
    assert "require_job_key" in refused["details"][0] and "job_key_sha256" in refused["details"][0]
    # The key's holder still gets every event, under the same id.
    await mallory.send("worker-1", to_wire(JobSync(job.job_id, 0, job_key=key)))
    replayed = [await inbox.next_of("job_status"), await inbox.next_of("job_complete")]
    assert replayed[0]["seq"] == 1 and replayed[-1]["app_message_type"] == "job_complete"
