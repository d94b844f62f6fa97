"""The client's upload and download shells over real aiortc channels: their one timer, a cancelled upload, a raising callback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from fsm_worker.shells.transfer import (
    ClientTransferEndpoint,
    ContentStore,
    FrameCode,
    TransferError,
    UploadStatus,
    WorkerTransferEndpoint,
)

T = 30.0
MiB = 1024 * 1024


def worker(channel: Any, tmp_path: Path, commits: list[list[Path]] | None = None) -> WorkerTransferEndpoint:
    return WorkerTransferEndpoint(
        channel,
        tmp_path / "job",
        ContentStore(tmp_path / "store"),
        256 * MiB,
        on_commit=(commits if commits is not None else []).append,
        results=lambda: None,
    )


async def test_a_silent_worker_fails_the_upload_on_the_reply_deadline(
    link: Any, tmp_path: Path, tools: Any
) -> None:
    src = tmp_path / "a.bin"
    tools.make_file(src, 1000, 1)
    received: list[str | bytes] = []
    link.worker.on("message", received.append)  # a peer that reads but never answers
    client = ClientTransferEndpoint(link.client, reply_timeout=0.3)
    with pytest.raises(TransferError) as failed:
        async with asyncio.timeout(T):
            await client.upload([src])
    assert (failed.value.code, failed.value.message) == (FrameCode.TIMEOUT, "no reply within 0.3 s")
    assert len(received) == 1 and '"type":"put"' in str(received[0]).replace(" ", "")
    assert client.uploader.next_deadline() is None and not client.uploader.busy
    assert client._upload.timer is None  # the shell's one timer is disarmed with the deadline


async def test_a_silent_worker_fails_the_download_on_the_cores_idle_deadline(
    link: Any, tmp_path: Path
) -> None:
    """The download's idle timeout is the core's deadline (one loop timer), not an `asyncio.timeout`."""
    received: list[str | bytes] = []
    link.worker.on("message", received.append)  # a peer that reads but never answers
    client = ClientTransferEndpoint(link.client, reply_timeout=0.3)
    started = asyncio.get_running_loop().time()
    with pytest.raises(TransferError) as failed:
        async with asyncio.timeout(T):
            await client.download(tmp_path / "out")
    assert (failed.value.code, failed.value.message) == (FrameCode.TIMEOUT, "download stalled for 0.3 s")
    assert asyncio.get_running_loop().time() - started >= 0.3
    assert len(received) == 1 and '"type":"fetch_results"' in str(received[0]).replace(" ", "")
    assert client._results.current is None
    assert list((tmp_path / "out").iterdir()) == []  # the staging folder went with the failure


async def test_a_cancelled_upload_leaves_the_endpoint_usable(link: Any, tmp_path: Path, tools: Any) -> None:
    src = tmp_path / "a.bin"
    digest = tools.make_file(src, 3 * MiB, 2)
    received: list[str | bytes] = []
    link.worker.on("message", received.append)  # the first put reaches a peer that never answers
    client = ClientTransferEndpoint(link.client)
    first = asyncio.ensure_future(client.upload([src]))
    async with asyncio.timeout(T):
        while not received:
            await asyncio.sleep(0.01)
    assert client.uploader.busy
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    link.worker.remove_listener("message", received.append)
    assert not client.uploader.busy and not client._upload.tasks
    commits: list[list[Path]] = []
    worker(link.worker, tmp_path, commits)
    async with asyncio.timeout(T):
        [uploaded] = await client.upload([src])
        assert await client.commit() == ["a.bin"]
    assert uploaded.status is UploadStatus.SENT
    assert tools.sha256_file(tmp_path / "job" / "inputs" / "a.bin") == digest
    assert [[path.name for path in paths] for paths in commits] == [["a.bin"]]


async def test_a_raising_progress_callback_ends_the_upload_with_its_error(
    link: Any, tmp_path: Path, tools: Any
) -> None:
    src = tmp_path / "a.bin"
    tools.make_file(src, 2 * MiB, 3)
    worker(link.worker, tmp_path)
    client = ClientTransferEndpoint(link.client)

    def progress(done: int, total: int) -> None:
        if done > MiB:
            raise RuntimeError("the caller's own bug")

    with pytest.raises(RuntimeError, match="the caller's own bug"):
        async with asyncio.timeout(T):
            await client.upload([src], progress)
    assert not client.uploader.busy
    async with asyncio.timeout(T):
        [uploaded] = await client.upload([src])  # the worker resumes or restarts what it got
    assert uploaded.size == 2 * MiB
    assert tools.sha256_file(tmp_path / "job" / "inputs" / "a.bin") == tools.sha256_file(src)
