"""Security: spoofed senders, foreign rooms, strangers assigning / cancelling / offering, path traversal and
oversize uploads over a real data channel. Everything is refused and nothing changes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import socketio
from aiortc import RTCDataChannel
from rooms import TIMEOUT, Inbox, Room, eventually, holds
from support.job_keys import keyed, keyed_request
from support.signaling import auth_for

from fsm_worker.client import JobClient, JobClientError
from fsm_worker.protocol.worker.states import WorkerStatus
from fsm_worker.shells.signaling import SignalingClient, SignalingError
from fsm_worker.shells.transfer.errors import TransferError
from fsm_worker.worker import WorkerHost

from .conftest import idle, open_raw_channel, probe, reserve_and_assign

JOB = "job-victim"
#: Mallory's own key for her own request (she never learns the victim's, `support.job_keys.TEST_JOB_KEY`).
MALLORY_KEY = "mallory-key-" + "m" * 31


def msg(kind: str, job_id: str = JOB, **fields: Any) -> dict[str, Any]:
    """A message as a stranger sends it: without the victim's job key."""
    return {"app_message_type": kind, "job_id": job_id, **fields}


def held_by(worker: WorkerHost) -> tuple[str, str, str] | None:
    """(status, client, job) of what the worker holds."""
    core = worker.core
    held = core.reservation or core.current_job
    return (core.status.value, held.client_id, held.job_id) if held else None


async def reserve(victim: SignalingClient, inbox: Inbox, job_type: str = "long-ticker") -> None:
    assert (await victim.send("worker-1", keyed_request(JOB, job_type))).delivered
    assert (await inbox.next_of("job_response"))["accepted"] is True


async def test_spoofed_sender_fields_are_ignored(room: Room) -> None:
    worker = await room.worker()
    victim, victim_inbox = await room.peer("victim")
    await reserve(victim, victim_inbox)
    replies: list[dict[str, Any]] = []
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("peer_message", replies.append)
    await sio.connect(room.url, auth=auth_for(room.token, "mallory"), transports=["websocket"])
    try:
        for kind in ("job_assignment", "job_cancel"):
            data = {
                "to_peer_id": "worker-1",
                "from_peer_id": "victim",
                "payload": msg(kind, from_peer_id="victim", sender="victim", client_id="victim"),
            }
            ack = await sio.call("peer_message", data, timeout=TIMEOUT)
            assert ack == {"ok": True} or ack.get("code") == "INVALID_MESSAGE", ack
        barrier = {"to_peer_id": "worker-1", "payload": msg("job_sync", job_id="barrier", after_seq=0)}
        assert await sio.call("peer_message", barrier, timeout=TIMEOUT) == {"ok": True}
        await eventually(holds(lambda: any(r["payload"].get("job_id") == "barrier" for r in replies)))
    finally:
        await sio.disconnect()
    # The worker saw mallory, not the victim: the assignment was refused to mallory, the cancel ignored.
    assert [(r["from_peer_id"], r["payload"]["code"]) for r in replies] == [
        ("worker-1", "INVALID_ASSIGNMENT"),
        ("worker-1", "UNKNOWN_JOB"),  # the barrier
    ]
    assert held_by(worker) == ("reserved", "victim", JOB)
    assert await probe(victim, victim_inbox, "worker-1") == []  # the victim was told nothing


async def test_a_live_or_recently_gone_peer_id_cannot_be_taken(room: Room) -> None:
    await room.worker()
    victim, _ = await room.peer("victim")
    for code in ("PEER_ID_TAKEN", "PEER_ID_RESERVED"):
        impostor = SignalingClient(room.url, room.token, "victim")
        with pytest.raises(SignalingError) as refused:
            await impostor.connect(timeout=TIMEOUT)
        assert refused.value.code == code
        await victim.close()  # now gone, but within the grace period only its secret can claim the id
    impostor = SignalingClient(room.url, room.token, "worker-1", role="worker")
    with pytest.raises(SignalingError, match="PEER_ID_TAKEN"):
        await impostor.connect(timeout=TIMEOUT)


async def test_foreign_room_can_neither_discover_nor_reach(room: Room) -> None:
    other = secrets.token_hex(12)
    await room.stop_server()
    await room.start_server(tokens=[room.token, other])
    worker = await room.worker()
    insider, _ = await room.peer("insider")
    outsider, outsider_inbox = await room.peer("outsider", token=other)
    assert [p["peer_id"] for p in await insider.discover({"role": "worker"})] == ["worker-1"]
    assert await outsider.discover({}) == []
    result = await outsider.send("worker-1", msg("job_request", job_type="ticker"))
    assert (result.status, result.code) == ("refused", "PEER_NOT_FOUND")
    result = await outsider.send("insider", {"app_message_type": "job_status"})
    assert (result.status, result.code) == ("refused", "PEER_NOT_FOUND")
    # The same peer id in the other room is another peer: it cannot reach or shadow the worker.
    twin, _ = await room.peer("worker-1", token=other)
    assert (await twin.send("insider", {"x": 1})).code == "PEER_NOT_FOUND"
    assert idle(worker) and worker.signaling.connected
    # A wrong token gets no room at all.
    with pytest.raises(SignalingError, match="AUTH_FAILED"):
        await SignalingClient(room.url, "not-a-token", "nobody").connect(timeout=TIMEOUT)
    assert outsider_inbox.empty()


async def test_strangers_cannot_assign_cancel_offer_or_sync(room: Room) -> None:
    worker = await room.worker()
    victim, victim_inbox = await room.peer("victim")
    mallory, inbox = await room.peer("mallory")
    await reserve(victim, victim_inbox)

    await mallory.send("worker-1", msg("job_assignment"))
    assert (await inbox.next_of("app_error"))["code"] == "INVALID_ASSIGNMENT"
    await mallory.send("worker-1", msg("job_cancel"))
    assert await probe(mallory, inbox, "worker-1") == []  # a stranger's cancel is ignored, not answered
    assert held_by(worker) == ("reserved", "victim", JOB)

    await victim.send("worker-1", keyed("job_assignment", JOB))
    await eventually(holds(lambda: worker.status is WorkerStatus.BUSY))
    for stranger_message, code in [
        (msg("rtc_offer", sdp="v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"), "NOT_ASSIGNED"),
        (msg("job_sync", after_seq=0), "UNKNOWN_JOB"),
        (msg("job_assignment"), "INVALID_ASSIGNMENT"),
    ]:
        await mallory.send("worker-1", stranger_message)
        error = await inbox.next_of("app_error")
        assert (error["code"], error["job_id"]) == (code, JOB)
    await mallory.send("worker-1", msg("job_cancel"))
    await mallory.send("worker-1", keyed_request(JOB, "ticker", key=MALLORY_KEY))
    response = await inbox.next_of("job_response")
    assert response["accepted"] is False and response["reason"] == "busy"
    assert await probe(mallory, inbox, "worker-1") == []
    assert held_by(worker) == ("busy", "victim", JOB)
    assert await probe(victim, victim_inbox, "worker-1") == []  # nothing of this reached the victim

    await victim.send("worker-1", keyed("job_cancel", JOB))
    assert (await victim_inbox.next_of("job_cancelled"))["job_id"] == JOB
    await eventually(holds(lambda: idle(worker)))


class Frames:
    """Control frames the worker sends on a raw data channel."""

    def __init__(self, channel: RTCDataChannel) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        channel.on(
            "message", lambda data: self.queue.put_nowait(json.loads(data)) if isinstance(data, str) else None
        )

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            return await self.queue.get()


def put(name: str, size: int, data: bytes = b"", restart: bool = False) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return json.dumps({"type": "put", "name": name, "size": size, "sha256": digest, "restart": restart})


def tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


TRAVERSAL = ["../evil", "../../evil", "/tmp/evil", "a/../../evil", "..", ".", "", "sub/evil", "..\\evil",
             "evil\x00.txt", "evil\n", "e" * 300]  # fmt: skip


async def test_path_traversal_and_oversize_uploads_are_refused(room: Room, tmp_path: Path) -> None:
    worker = await room.worker(max_upload_bytes=64 * 1024)
    victim, inbox = await room.peer("victim")
    await reserve_and_assign(victim, inbox, "worker-1", JOB, "copy")
    pc, channel = await open_raw_channel(victim, inbox, "worker-1", JOB)
    try:
        frames = Frames(channel)
        before = tree(tmp_path)
        for name in TRAVERSAL:
            channel.send(put(name, 5, b"evil!"))
            channel.send(b"evil!")  # a chunk after a refused header is refused too
            error = await frames.next()
            assert (error["type"], error["code"]) == ("error", "BAD_NAME"), (name, error)
            error = await frames.next()
            assert (error["type"], error["code"]) == ("error", "UNEXPECTED"), (name, error)
        # Too large as announced: refused before a byte is written.
        channel.send(put("big.bin", 65 * 1024))
        error = await frames.next()
        assert (error["code"], error["name"]) == ("TOO_LARGE", "big.bin")
        # Announced small, sent large: the excess is refused without being written.
        data = b"x" * 1000
        channel.send(put("liar.bin", 1000, data))
        assert (await frames.next())["type"] == "ready"
        channel.send(b"x" * 60_000)
        error = await frames.next()
        assert (error["code"], error["name"]) == ("SIZE_MISMATCH", "liar.bin")
        created = tree(tmp_path) - before
        assert not any("evil" in path for path in created), created
        assert all(path.startswith("worker-1/jobs/") for path in created), created
        partials = [p for p in worker.job_dir(JOB).rglob("*") if p.is_file()]
        assert all(p.stat().st_size == 0 for p in partials), partials
        # The endpoint still serves a proper upload afterwards: state was not corrupted.
        channel.send(put("liar.bin", 1000, data, restart=True))
        assert (await frames.next())["type"] == "ready"
        channel.send(data)
        channel.send(json.dumps({"type": "end", "name": "liar.bin"}))
        assert (await frames.next())["type"] == "ack"
        assert (worker.job_dir(JOB) / "inputs" / "liar.bin").read_bytes() == data
        assert held_by(worker) == ("busy", "victim", JOB)
    finally:
        await pc.close()


async def test_client_api_upload_over_the_limit_is_refused_and_released(room: Room, tmp_path: Path) -> None:
    worker = await room.worker(max_upload_bytes=64 * 1024)
    client: JobClient = await room.client()
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (128 * 1024))
    with pytest.raises((JobClientError, TransferError)) as refused:  # DataChannelError once the lead's
        await client.submit("copy", inputs=[big])  # change lands; a bare TransferError before it
    assert getattr(refused.value, "code", None) == "TOO_LARGE", refused.value
    await eventually(holds(lambda: idle(worker)))  # the failed submission released the worker
    jobs = worker.config.workdir / "jobs"
    await eventually(holds(lambda: not any(jobs.iterdir())))  # and its files are gone


async def test_an_assignment_without_input_bytes_frees_the_worker_for_an_honest_client(
    room: Room, tmp_path: Path
) -> None:
    """Item 8: a member that reserves and assigns but never uploads holds the worker only for
    `first_input_timeout`, then the worker is free and an honest submission runs."""
    worker = await room.worker(first_input_timeout=1.0)
    mallory, inbox = await room.peer("mallory")
    await reserve_and_assign(mallory, inbox, "worker-1", "held-job", "copy")
    await eventually(holds(lambda: worker.status is WorkerStatus.BUSY))
    failed = await inbox.next_of("job_failed")
    error = failed["error"]
    assert (failed["job_id"], error["code"], error["recoverable"]) == (
        "held-job",
        "FIRST_INPUT_TIMEOUT",
        True,
    )
    assert "first_input_timeout" in error["message"]
    await eventually(holds(lambda: idle(worker)))

    client: JobClient = await room.client()
    data = tmp_path / "data.bin"
    data.write_bytes(b"honest" * 1000)
    job = await client.submit("copy", inputs=[data])
    outcome = await job.result(tmp_path / "out")
    assert [path.read_bytes() for path in outcome.files] == [data.read_bytes()]
