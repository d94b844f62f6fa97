"""Data channel drop mid-upload and mid-download: the client opens a new channel, the upload resumes from the
offset the worker verified, the download starts again, and every hash checks out."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from rooms import Room, eventually, holds

from fsm_worker.client import Job, JobClient
from fsm_worker.shells.transfer.client import UploadStatus
from fsm_worker.worker import WorkerHost

from .conftest import idle

SIZE = 16 * 1024 * 1024
DROP_AT = 5 * SIZE // 8  # well past the sender's 4 MiB high-water mark: bytes have really arrived


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "inputs" / "blob.bin"
    path.parent.mkdir()
    path.write_bytes(random.Random(7).randbytes(SIZE))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def the_job(client: JobClient) -> Job:
    (job,) = client._jobs.values()  # submit() has not returned it yet
    return job


def dropper(side: str, client: JobClient, worker: WorkerHost) -> tuple[Callable[[int, int], None], list[int]]:
    """A progress callback that, once DROP_AT bytes have moved, closes one side's peer connection (once)."""
    dropped: list[int] = []

    def on_progress(done: int, total: int) -> None:
        if dropped or done < DROP_AT:
            return
        dropped.append(done)
        job = the_job(client)
        pc = job._pc if side == "client" else worker.channels.connection(job.job_id)
        assert pc is not None
        asyncio.get_running_loop().create_task(pc.close())

    return on_progress, dropped


@pytest.mark.parametrize("side", ["client", "worker"])
async def test_upload_resumes_on_a_new_channel(room: Room, payload: Path, tmp_path: Path, side: str) -> None:
    worker = await room.worker()
    client = await room.client()
    on_upload, dropped = dropper(side, client, worker)
    job = await client.submit("copy", inputs=[payload], on_upload=on_upload)
    assert dropped, "the channel was never dropped"
    (uploaded,) = job.uploaded
    assert uploaded.status is UploadStatus.RESUMED and 0 < uploaded.bytes_sent < SIZE, uploaded
    assert uploaded.sha256 == sha256(payload)
    assert sha256(worker.job_dir(job.job_id) / "inputs" / "blob.bin") == sha256(payload)
    await job.result(tmp_path / "out")
    assert sha256(tmp_path / "out" / "blob.bin") == sha256(payload)
    await eventually(holds(lambda: idle(worker)))


@pytest.mark.parametrize("side", ["client", "worker"])
async def test_download_restarts_on_a_new_channel(
    room: Room, payload: Path, tmp_path: Path, side: str
) -> None:
    worker = await room.worker()
    client = await room.client()
    job = await client.submit("copy", inputs=[payload])
    on_download, dropped = dropper(side, client, worker)
    out = tmp_path / "out"
    outcome = await job.result(out, on_download)
    assert dropped, "the channel was never dropped"
    assert [path.name for path in outcome.files] == ["blob.bin"]
    assert sha256(out / "blob.bin") == sha256(payload)
    assert sorted(path.name for path in out.iterdir()) == ["blob.bin"], "a partial download was left behind"
