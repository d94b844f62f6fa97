"""Issue 10, items 1, 2, 4 and 9 over real processes: `fsm-worker server` and `fsm-worker worker` run as
their own processes; the honest clients and the attackers (raw peers, hand-written frames) are in the test.

Each test is the attack that worked before its defence (docs/security.md): results read under a taken peer
id, stored content obtained by its hash, the worker's secrets in a job's environment, a job flooded with
files. The waits are liveness bounds, not timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import stat
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from support import cli_processes, trust_jobs
from support.rtc_links import RawPeer
from support.signaling import free_port

from fsm_worker.client import Job, JobClient
from fsm_worker.protocol.client.errors import DataChannelError
from fsm_worker.protocol.messages import JobRequest, JobSync, Requirements, to_wire
from fsm_worker.protocol.transfer import sender
from fsm_worker.shells.signaling import SignalingClient, SignalingError
from fsm_worker.shells.transfer.worker import WorkerTransferEndpoint
from fsm_worker.worker import WorkerConfig, WorkerHost

TIMEOUT = 30.0
TESTS = Path(__file__).resolve().parents[2]
WORKER = "gpu-1"


@attrs.define
class Cluster:
    url: str
    token: str
    workdir: Path

    def client(self, peer_id: str | None = None) -> JobClient:
        return JobClient(self.url, self.token, peer_id, loopback_only=True)


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path,
    *,
    server_args: tuple[str, ...] = (),
    worker_args: tuple[str, ...] = (),
    worker_env: Mapping[str, str] | None = None,
    token_in_env: bool = False,
) -> AsyncIterator[Cluster]:
    """A server process and a worker process (the test job types of `support/trust_jobs.py`); with
    `token_in_env` the worker reads the room token from `FSM_WORKER_TOKEN`, not from a flag."""
    token, port = secrets.token_hex(12), free_port()
    url = f"http://127.0.0.1:{port}"
    server = await cli_processes.start(
        "server", "--port", str(port), "--token", token, *server_args, ready="listening on", timeout=TIMEOUT
    )
    workdir = tmp_path / "worker"
    env = {"PYTHONPATH": str(TESTS), **(worker_env or {})}
    if token_in_env:
        env["FSM_WORKER_TOKEN"] = token
    else:
        worker_args = ("--token", token, *worker_args)
    try:
        worker = await cli_processes.start(
            "worker", "--server", url, "--peer-id", WORKER, "--gpu-memory-mb", "8192", "--workdir", str(workdir),
            "--no-journal", "--loopback-only", "--job-types-from", "support.trust_jobs:job_types", *worker_args,
            ready="connected", timeout=TIMEOUT, env=env,
        )  # fmt: skip
        try:
            yield Cluster(url, token, workdir)
        finally:
            assert await cli_processes.stop(worker, TIMEOUT) == 0
    finally:
        await cli_processes.stop(server, TIMEOUT)


class Inbox:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def __call__(self, sender: str, payload: dict[str, Any]) -> None:
        self.queue.put_nowait(payload)

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            return await self.queue.get()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def reserved_with_channel(client: JobClient, job_type: str) -> Job:
    """A job reserved, assigned and with an open data channel, but nothing uploaded (an attacker's start)."""
    request = JobRequest(f"job-{secrets.token_hex(6)}", job_type, {}, Requirements())
    job = Job(client._link, request, {}, secrets.token_urlsafe(32))
    client._jobs[request.job_id] = job
    await job.reserve([WORKER], 0.0)
    await job.open_channel()
    return job


def raw_channel(job: Job) -> RawPeer:
    """The job's data channel, taken from the client's transfer endpoint to send frames by hand."""
    transfer = job.open_transfer()
    assert transfer is not None
    channel: Any = transfer.channel
    channel.remove_all_listeners("message")
    return RawPeer(channel)


# --- item 1: results theft after the resume grace ------------------------------------------------------------


async def test_after_alices_grace_mallory_under_her_id_reads_nothing_without_the_key(tmp_path: Path) -> None:
    async with cluster(
        tmp_path, server_args=("--resume-grace", "0.5")
    ) as room:  # require_job_key: the default
        alice = room.client("alice")
        await alice.connect()
        job = await alice.submit("copy", inputs=[write(tmp_path / "secret.txt", b"alice's data\n")])
        assert (await job.result(tmp_path / "alice")).files
        key, job_id = job.job_key, job.job_id
        assert key is not None
        await alice.close()

        inbox = Inbox()
        async with asyncio.timeout(TIMEOUT):  # Mallory takes the id as soon as the grace is over
            while True:
                mallory = SignalingClient(room.url, room.token, "alice", on_peer_message=inbox)
                try:
                    await mallory.connect(timeout=TIMEOUT)
                    break
                except SignalingError as error:
                    assert error.code in ("PEER_ID_RESERVED", "PEER_ID_TAKEN")
                    await mallory.close()
                    await asyncio.sleep(0.1)
        workers = await mallory.discover({"role": "worker"})
        assert job_id not in json.dumps(workers)  # the room is not told which job a worker holds
        await mallory.send(WORKER, to_wire(JobSync(job_id, 0)))
        answer = await inbox.next()  # the answer, not a replay of Alice's events
        assert (answer["app_message_type"], answer["code"]) == ("app_error", "UNKNOWN_JOB")
        await mallory.send(WORKER, {"app_message_type": "rtc_offer", "job_id": job_id, "sdp": "v=0\r\n"})
        answer = await inbox.next()  # no data channel, so no files
        assert (answer["app_message_type"], answer["code"]) == ("app_error", "NOT_ASSIGNED")
        keyless = {"app_message_type": "job_request", "job_id": "keyless", "job_type": "copy", "config": {}}
        await mallory.send(WORKER, keyless)  # a job bound to a peer id alone: refused by default
        answer = await inbox.next()
        assert (answer["accepted"], answer["reason"]) == (False, "incompatible")
        assert "require_job_key" in answer["details"][0]
        assert inbox.queue.empty()
        await mallory.close()

        async with asyncio.timeout(TIMEOUT):  # the key's holder still gets the events and the files
            while True:
                back = room.client("alice")
                try:
                    await back.connect()
                    break
                except Exception:
                    await back.close()
                    await asyncio.sleep(0.1)
        again = await back.attach(job_id, WORKER, job_key=key)
        outcome = await again.result(tmp_path / "again")
        assert [p.read_bytes() for p in outcome.files] == [b"alice's data\n"]
        await back.close()


# --- item 2: the content store -------------------------------------------------------------------------------


async def test_mallory_cannot_obtain_alices_upload_by_its_hash_and_the_store_is_private(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as room:
        data = secrets.token_bytes(200_000)
        digest = hashlib.sha256(data).hexdigest()
        alice = room.client("alice")
        await alice.connect()
        job = await alice.submit("copy", inputs=[write(tmp_path / "alice.slp", data)])
        await job.result(tmp_path / "alice")
        await alice.close()
        store = room.workdir / "store"
        assert stat.S_IMODE(store.stat().st_mode) == 0o700
        assert stat.S_IMODE((store / digest).stat().st_mode) == 0o400

        mallory = room.client("mallory")
        await mallory.connect()
        theft = await reserved_with_channel(mallory, "copy")
        peer = raw_channel(theft)
        peer.send({"type": "put", "name": "stolen.slp", "size": len(data), "sha256": digest})
        challenge = await peer.reply()
        assert challenge["type"] == "prove"  # not `have`: knowing the hash is not enough
        peer.send({"type": "proof", "name": "stolen.slp", "sha256": digest})  # the hash is all she has
        assert await peer.reply() == {
            "type": "ready",
            "name": "stolen.slp",
            "offset": 0,
            "prefix_sha256": None,
        }
        peer.send({"type": "end", "name": "stolen.slp"})
        assert (await peer.reply())["code"] == "SIZE_MISMATCH"
        peer.send({"type": "commit"})
        assert await peer.reply() == {"type": "committed", "files": []}
        await theft.cancel()
        await mallory.close()


async def test_what_a_cancelled_job_uploaded_is_reclaimed_from_the_store(tmp_path: Path) -> None:
    async with cluster(tmp_path, worker_args=("--kill-grace", "0.5")) as room:
        data = secrets.token_bytes(100_000)
        entry = room.workdir / "store" / hashlib.sha256(data).hexdigest()
        client = room.client()
        await client.connect()
        job = await client.submit("sleep", inputs=[write(tmp_path / "own.bin", data)])
        assert entry.is_file()
        await job.cancel()
        await job.wait()
        async with asyncio.timeout(TIMEOUT):  # the cleanup follows the cancel
            while entry.exists():
                await asyncio.sleep(0.05)
        await client.close()


# --- item 4: jobs see the worker's secrets --------------------------------------------------------------------


async def test_a_job_started_by_a_worker_process_sees_none_of_its_secrets(tmp_path: Path) -> None:
    env = {"FSM_WORKER_ICE_CREDENTIAL": "turn-password", "SECRET_X": "hunter2", "OWNER_EXTRA": "allowed",
           "FSM_WORKER_JOB_ENV_ALLOW": "OWNER_EXTRA,FSM_WORKER_*", "LANG": "C.UTF-8"}  # fmt: skip
    async with cluster(tmp_path, worker_env=env, token_in_env=True) as room:
        client = room.client()
        await client.connect()
        job = await client.submit("env-dump")
        (dump,) = (await job.result(tmp_path / "out")).files
        seen = json.loads(dump.read_text())
        await client.close()
    assert not {
        "FSM_WORKER_TOKEN",
        "FSM_WORKER_ICE_CREDENTIAL",
        "FSM_WORKER_JOB_ENV_ALLOW",
        "SECRET_X",
    } & set(seen)
    assert room.token not in json.dumps(seen) and "hunter2" not in json.dumps(seen)
    assert {"PATH", "HOME", "LANG"} <= set(seen) and seen["LANG"] == "C.UTF-8"
    assert seen["OWNER_EXTRA"] == "allowed"  # the owner's allow-list


# --- item 9: files per job ------------------------------------------------------------------------------------


async def test_a_job_with_more_input_files_than_the_workers_limit_is_refused(tmp_path: Path) -> None:
    files = [write(tmp_path / f"in{i}.txt", f"{i}\n".encode()) for i in range(4)]
    async with cluster(tmp_path, worker_env={"FSM_WORKER_MAX_INPUT_FILES": "3"}) as room:
        client = room.client()
        await client.connect()
        with pytest.raises(DataChannelError) as refused:
            await client.submit("copy", inputs=files)
        assert refused.value.code == "TOO_MANY_FILES"
        assert "max_input_files = 3" in refused.value.message
        async with asyncio.timeout(TIMEOUT):  # the refused job was given up: the worker is free again
            while not any(w.status == "available" for w in await client.discover_workers()):
                await asyncio.sleep(0.05)
        job = await client.submit("copy", inputs=files[:3])  # and takes an honest job
        outcome = await job.result(tmp_path / "out")
        assert sorted(p.name for p in outcome.files) == ["in0.txt", "in1.txt", "in2.txt"]
        await client.close()


# --- item 3: a rogue worker and `fsm-worker submit --out DIR` -----------------------------------------------


@pytest.fixture
async def rogue_room(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    """A server process and a rogue worker in this process: its sender names `escape-x` `../x` and no longer
    checks names (a rogue worker is modified code; the client is the only defence)."""
    monkeypatch.setattr(sender, "check_relative_path", lambda name: None)
    describe = WorkerTransferEndpoint._describe_result

    def rogue_describe(self: WorkerTransferEndpoint, path: Path) -> tuple[str, Any, int]:
        name, kind, size = describe(self, path)
        return ("../x" if name == "escape-x" else name), kind, size

    monkeypatch.setattr(WorkerTransferEndpoint, "_describe_result", rogue_describe)
    token, port = secrets.token_hex(12), free_port()
    url = f"http://127.0.0.1:{port}"
    server = await cli_processes.start(
        "server", "--port", str(port), "--token", token, ready="listening on", timeout=TIMEOUT
    )
    try:
        config = WorkerConfig(url, token, WORKER, workdir=tmp_path / "rogue", gpu_memory_mb=8192,
                              loopback_only=True, journal=False)  # fmt: skip
        host = WorkerHost(config, trust_jobs.rogue_job_types())
        await host.start()
        try:
            yield Cluster(url, token, tmp_path / "rogue")
        finally:
            await host.shutdown()
    finally:
        await cli_processes.stop(server, TIMEOUT)


async def submit(room: Cluster, tmp_path: Path, job_type: str, out: Path, *args: str) -> tuple[int, str]:
    """`fsm-worker submit` as a real process: its exit code and its output."""
    proc = await asyncio.create_subprocess_exec(
        *cli_processes.CLI, "submit", "--server", room.url, "--token", room.token, "--job-type", job_type,
        "--out", str(out), "--loopback-only", "--state-dir", str(tmp_path / "state"), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    async with asyncio.timeout(TIMEOUT):
        output, _ = await proc.communicate()
    return proc.returncode or 0, output.decode()


async def test_a_rogue_worker_cannot_overwrite_escape_or_flood_the_submit_folder(
    rogue_room: Cluster, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    mine = {".bashrc": "mine\n", "data.csv": "1,2\n"}
    for name, text in mine.items():
        (out / name).write_text(text)

    code, output = await submit(rogue_room, tmp_path, "rogue-overwrite", out)
    assert code == 0, output
    (job_dir,) = [p for p in out.iterdir() if p.is_dir()]  # DIR/<job_id>/: a fresh folder per job
    assert job_dir.name in output
    assert {p.name: p.read_text() for p in job_dir.iterdir()} == {".bashrc": "evil\n", "data.csv": "6,6,6\n"}
    assert {name: (out / name).read_text() for name in mine} == mine  # nothing replaced

    code, output = await submit(rogue_room, tmp_path, "rogue-escape", out)
    assert code != 0 and "BAD_NAME" in output, output
    assert not (out / "x").exists() and not (tmp_path / "x").exists()

    code, output = await submit(rogue_room, tmp_path, "rogue-many", out, "--max-download-files", "3")
    assert code != 0 and "TOO_MANY_FILES" in output and "max_download_files = 3" in output, output
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(mine)
    assert [p for p in out.iterdir() if p.is_dir()] == [job_dir]  # refused downloads leave no folder
