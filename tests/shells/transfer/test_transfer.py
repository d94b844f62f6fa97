"""File transfer over real aiortc data channels on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from fsm_worker.shells.transfer import (
    ChannelClosedError,
    ClientTransferEndpoint,
    ContentStore,
    DownloadInterrupted,
    FrameCode,
    RemoteTransferError,
    TransferTuning,
    UploadStatus,
    WorkerTransferEndpoint,
)

T = 30.0
MiB = 1024 * 1024
LinkFactory = Callable[[], Awaitable[Any]]


@attrs.define
class Job:
    """A worker endpoint for one job plus what its callbacks saw."""

    dir: Path
    commits: list[list[Path]] = attrs.Factory(list)
    results: list[Path] | None = None
    progress: list[tuple[str, int, int]] = attrs.Factory(list)

    def endpoint(
        self, channel: Any, store: ContentStore, max_upload: int = 256 * MiB
    ) -> WorkerTransferEndpoint:
        return WorkerTransferEndpoint(
            channel,
            self.dir,
            store,
            max_upload,
            on_commit=self.commits.append,
            results=lambda: self.results,
            on_progress=lambda name, done, total: self.progress.append((name, done, total)),
        )


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "store")


@pytest.fixture
def job(tmp_path: Path) -> Job:
    return Job(tmp_path / "jobs" / "j1")


async def test_upload_several_files_including_a_large_one(
    link: Any, job: Job, store: ContentStore, tmp_path: Path, tools: Any
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sizes = {"data.csv": 20 * MiB + 123, "config.json": 300, "empty.bin": 0, "odd.bin": 65536 * 3 + 1}
    hashes = {name: tools.make_file(src / name, size, i) for i, (name, size) in enumerate(sizes.items())}
    worker = job.endpoint(link.worker, store)
    client = ClientTransferEndpoint(link.client)
    seen: list[tuple[int, int]] = []
    buffered: list[int] = []

    def on_progress(done: int, total: int) -> None:
        seen.append((done, total))
        buffered.append(link.client.bufferedAmount)

    async with asyncio.timeout(T):
        uploaded = await client.upload([src / n for n in sizes], on_progress)
    assert [u.name for u in uploaded] == list(sizes)
    for u in uploaded:
        assert u.status is UploadStatus.SENT
        assert (u.size, u.sha256) == (sizes[u.name], hashes[u.name])
        assert tools.sha256_file(job.dir / "inputs" / u.name) == hashes[u.name]
    total = sum(sizes.values())
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert client.stats.chunk_bytes_sent == worker.stats.chunk_bytes_received == total
    assert job.progress[-1][0] == "odd.bin"
    assert max(p[1] for p in job.progress if p[0] == "data.csv") == sizes["data.csv"]
    assert all(h in store for h in hashes.values())
    tuning = TransferTuning()
    assert max(buffered) <= tuning.high_water + tuning.chunk_size  # bounded send buffer


async def test_commit_and_download_results(
    link: Any, job: Job, store: ContentStore, tmp_path: Path, tools: Any
) -> None:
    src = tmp_path / "in.txt"
    tools.make_file(src, 1000, 1)
    worker = job.endpoint(link.worker, store)
    client = ClientTransferEndpoint(link.client)
    async with asyncio.timeout(T):
        await client.upload([src])
        assert await client.commit() == ["in.txt"]
        assert job.commits == [[job.dir / "inputs" / "in.txt"]]
        with pytest.raises(RemoteTransferError) as again:
            await client.commit()
        assert again.value.code == FrameCode.COMMITTED
        with pytest.raises(RemoteTransferError) as late:
            await client.upload([src])
        assert late.value.code == FrameCode.COMMITTED

        with pytest.raises(RemoteTransferError) as not_ready:
            await client.download(tmp_path / "out")
        assert not_ready.value.code == FrameCode.NOT_READY

        out_dir = job.dir / "outputs"
        out_dir.mkdir()
        hashes = {
            "model.npz": tools.make_file(out_dir / "model.npz", 3 * MiB + 7, 2),
            "metrics.json": tools.make_file(out_dir / "metrics.json", 50, 3),
        }
        job.results = sorted(out_dir.iterdir())
        seen: list[tuple[int, int]] = []
        paths = await client.download(tmp_path / "out", lambda d, t: seen.append((d, t)))
    assert sorted(p.name for p in paths) == sorted(hashes)
    for p in paths:
        assert tools.sha256_file(p) == hashes[p.name]
    total = 3 * MiB + 7 + 50
    assert seen[-1] == (total, total)
    assert worker.stats.files_sent == 2
    assert client.stats.chunk_bytes_received == total
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


async def test_commit_refused_by_host(link: Any, store: ContentStore, tmp_path: Path) -> None:
    def refuse(_paths: list[Path]) -> None:
        raise RuntimeError("job was cancelled")

    WorkerTransferEndpoint(link.worker, tmp_path / "j", store, MiB, on_commit=refuse, results=lambda: None)
    client = ClientTransferEndpoint(link.client)
    with pytest.raises(RemoteTransferError, match="job was cancelled") as err:
        async with asyncio.timeout(T):
            await client.commit()
    assert err.value.code == FrameCode.COMMIT_FAILED


@pytest.mark.parametrize(
    "name", ["..", ".", "", "/etc/passwd", "../escape", "sub/file", "a\\b", "nul\x00byte", "tab\tname"]
)
async def test_bad_names_are_refused(link: Any, job: Job, store: ContentStore, tools: Any, name: str) -> None:
    job.endpoint(link.worker, store)
    peer = tools.raw_peer(link.client)
    peer.send({"type": "put", "name": name, "size": 1, "sha256": "a" * 64})
    reply = await peer.reply()
    assert reply["type"] == "error"
    assert reply["code"] == FrameCode.BAD_NAME
    assert reply["ref"] == "put"
    assert not (job.dir / ".partial").exists() or not list((job.dir / ".partial").iterdir())
    assert not (job.dir.parent / "escape").exists()


async def test_symlinks_are_refused(link: Any, job: Job, store: ContentStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (job.dir / "inputs").mkdir(parents=True)
    (job.dir / "inputs" / "evil.txt").symlink_to(outside)
    src = tmp_path / "evil.txt"
    src.write_text("overwrite")
    job.endpoint(link.worker, store)
    client = ClientTransferEndpoint(link.client)
    with pytest.raises(RemoteTransferError) as err:
        async with asyncio.timeout(T):
            await client.upload([src])
    assert err.value.code == FrameCode.LINK_REFUSED
    assert outside.read_text() == "precious"


async def test_symlinked_inputs_dir_is_refused(
    link: Any, store: ContentStore, tmp_path: Path, tools: Any
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    job = Job(tmp_path / "job")
    job.dir.mkdir()
    (job.dir / "inputs").symlink_to(elsewhere, target_is_directory=True)
    job.endpoint(link.worker, store)
    peer = tools.raw_peer(link.client)
    peer.send({"type": "put", "name": "x", "size": 1, "sha256": "a" * 64})
    reply = await peer.reply()
    assert (reply["type"], reply["code"]) == ("error", FrameCode.LINK_REFUSED)
    assert not list(elsewhere.iterdir())


async def test_oversize_upload_refused(
    link: Any, job: Job, store: ContentStore, tmp_path: Path, tools: Any
) -> None:
    for i, name in enumerate(("a.bin", "b.bin", "big.bin")):
        tools.make_file(tmp_path / name, 2 * MiB if name == "big.bin" else 600_000, i)
    worker = job.endpoint(link.worker, store, max_upload=MiB)
    client = ClientTransferEndpoint(link.client)
    async with asyncio.timeout(T):
        with pytest.raises(RemoteTransferError) as big:
            await client.upload([tmp_path / "big.bin"])
        assert big.value.code == FrameCode.TOO_LARGE
        await client.upload([tmp_path / "a.bin"])
        with pytest.raises(RemoteTransferError) as cumulative:
            await client.upload([tmp_path / "b.bin"])
        assert cumulative.value.code == FrameCode.TOO_LARGE
        # replacing a file of the same name only counts the new size
        uploaded = await client.upload([tmp_path / "a.bin"])
    assert uploaded[0].status is UploadStatus.DEDUPED
    assert worker.stats.chunk_bytes_received == 600_000


async def test_bad_frames_get_error_frames_and_change_nothing(
    link: Any, job: Job, store: ContentStore, tmp_path: Path, tools: Any
) -> None:
    worker = job.endpoint(link.worker, store)
    peer = tools.raw_peer(link.client)
    bad: list[Any] = [
        "not json",
        "[1, 2]",
        {"type": "warp"},
        {"type": "put", "name": "x", "size": "12", "sha256": "a" * 64},
        {"type": "put", "name": "x", "size": -1, "sha256": "a" * 64},
        {"type": "put", "name": "x", "size": 1, "sha256": "XYZ"},
        {"type": "commit", "extra": True},
        {"type": "end", "name": "nothing"},
        {"type": "ack", "name": "x", "size": 1, "sha256": "a" * 64},
        b"stray chunk",
    ]
    for frame in bad:
        peer.send(frame)
        reply = await peer.reply()
        assert reply["type"] == "error", frame
        assert reply["code"] in (FrameCode.BAD_FRAME, FrameCode.UNEXPECTED), reply
    assert not (job.dir / "inputs").exists() or not list((job.dir / "inputs").iterdir())
    link.client.remove_all_listeners("message")
    src = tmp_path / "ok.txt"
    digest = tools.make_file(src, 70_000, 4)
    client = ClientTransferEndpoint(link.client)
    async with asyncio.timeout(T):
        [uploaded] = await client.upload([src])
    assert uploaded.sha256 == digest
    assert worker.stats.errors_sent == len(bad)


async def test_chunk_beyond_size_and_bad_hash(link: Any, job: Job, store: ContentStore, tools: Any) -> None:
    job.endpoint(link.worker, store)
    peer = tools.raw_peer(link.client)
    peer.send({"type": "put", "name": "f", "size": 4, "sha256": "b" * 64})
    assert (await peer.reply())["type"] == "ready"
    peer.send(b"12345")
    reply = await peer.reply()
    assert (reply["type"], reply["code"]) == ("error", FrameCode.SIZE_MISMATCH)
    peer.send(b"1234")  # the refused chunk changed nothing; the right one fits
    peer.send({"type": "end", "name": "f"})
    reply = await peer.reply()
    assert (reply["type"], reply["code"]) == ("error", FrameCode.HASH_MISMATCH)
    assert not (job.dir / "inputs" / "f").exists()
    assert not list((job.dir / ".partial").iterdir())


async def test_dedupe_sends_no_bytes(
    link_factory: LinkFactory, store: ContentStore, tmp_path: Path, tools: Any
) -> None:
    src = tmp_path / "weights.bin"
    digest = tools.make_file(src, 5 * MiB, 5)
    first, second = Job(tmp_path / "j1"), Job(tmp_path / "j2")
    link1 = await link_factory()
    first.endpoint(link1.worker, store)
    async with asyncio.timeout(T):
        await ClientTransferEndpoint(link1.client).upload([src])
    link2 = await link_factory()
    worker = second.endpoint(link2.worker, store)
    client = ClientTransferEndpoint(link2.client)
    progress: list[tuple[int, int]] = []
    async with asyncio.timeout(T):
        [uploaded] = await client.upload([src], lambda d, t: progress.append((d, t)))
    assert uploaded.status is UploadStatus.DEDUPED
    assert uploaded.bytes_sent == 0
    assert client.stats.chunk_bytes_sent == 0
    assert client.stats.chunks_sent == 0
    assert worker.stats.chunk_bytes_received == 0
    assert worker.stats.files_deduped == 1
    assert progress[-1] == (5 * MiB, 5 * MiB)
    assert tools.sha256_file(second.dir / "inputs" / "weights.bin") == digest


async def test_resume_after_connection_drop(
    link_factory: LinkFactory, job: Job, store: ContentStore, tmp_path: Path, tools: Any
) -> None:
    size = 8 * MiB
    src = tmp_path / "big.bin"
    digest = tools.make_file(src, size, 6)
    link1 = await link_factory()
    worker1 = job.endpoint(link1.worker, store)
    client1 = ClientTransferEndpoint(
        link1.client, tuning=TransferTuning(high_water=256 * 1024, low_water=64 * 1024)
    )
    dropped: list[asyncio.Task[None]] = []

    def drop_midway(done: int, _total: int) -> None:
        if done >= 3 * MiB and not dropped:
            dropped.append(asyncio.ensure_future(link1.close()))

    with pytest.raises(ChannelClosedError):
        async with asyncio.timeout(T):
            await client1.upload([src], drop_midway)
    async with asyncio.timeout(T):
        await dropped[0]
        await worker1.wait_closed()
    received = worker1.stats.chunk_bytes_received
    assert 0 < received < size
    assert not (job.dir / "inputs" / "big.bin").exists()

    link2 = await link_factory()
    worker2 = job.endpoint(link2.worker, store)
    client2 = ClientTransferEndpoint(link2.client)
    async with asyncio.timeout(T):
        [uploaded] = await client2.upload([src])
    assert uploaded.status is UploadStatus.RESUMED
    assert uploaded.bytes_sent == size - received
    assert worker2.stats.chunk_bytes_received == size - received
    assert worker2.stats.files_resumed == 1
    assert tools.sha256_file(job.dir / "inputs" / "big.bin") == digest


async def test_resume_with_corrupt_partial_restarts(
    link_factory: LinkFactory, job: Job, store: ContentStore, tmp_path: Path, tools: Any
) -> None:
    size = 2 * MiB
    src = tmp_path / "f.bin"
    digest = tools.make_file(src, size, 7)
    partial_dir = job.dir / ".partial"
    partial_dir.mkdir(parents=True)
    (partial_dir / f"{digest}.part").write_bytes(b"\xff" * MiB)  # wrong prefix bytes
    link = await link_factory()
    job.endpoint(link.worker, store)
    client = ClientTransferEndpoint(link.client)
    async with asyncio.timeout(T):
        [uploaded] = await client.upload([src])
    assert uploaded.status is UploadStatus.SENT
    assert uploaded.bytes_sent == size
    assert tools.sha256_file(job.dir / "inputs" / "f.bin") == digest


async def test_receiver_memory_stays_far_below_file_size(
    link: Any, job: Job, store: ContentStore, tmp_path: Path, tools: Any
) -> None:
    size = 8 * MiB
    src = tmp_path / "mem.bin"
    digest = tools.make_file(src, size, 8)
    job.endpoint(link.worker, store)
    client = ClientTransferEndpoint(
        link.client, tuning=TransferTuning(high_water=256 * 1024, low_water=64 * 1024)
    )
    tracemalloc.start()
    try:
        async with asyncio.timeout(T * 2):
            await client.upload([src])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tools.sha256_file(job.dir / "inputs" / "mem.bin") == digest
    # both peers live in this process: sender window (1 MiB) + SCTP queues + one message in flight
    assert peak < size / 3, f"peak {peak / MiB:.1f} MiB"


async def test_worker_survives_channel_close_without_traffic(
    link: Any, job: Job, store: ContentStore
) -> None:
    worker = job.endpoint(link.worker, store)
    await link.close()
    async with asyncio.timeout(T):
        await worker.wait_closed()
    assert worker.stats.errors_sent == 0


async def test_stray_chunks_get_one_error_and_put_abandons_open_upload(
    link: Any, job: Job, store: ContentStore, tools: Any
) -> None:
    worker = job.endpoint(link.worker, store)
    peer = tools.raw_peer(link.client)
    for _ in range(5):
        peer.send(b"stray")
    peer.send({"type": "put", "name": "f", "size": 4, "sha256": "c" * 64})
    first = await peer.reply()
    assert (first["type"], first["code"], first["ref"]) == ("error", FrameCode.UNEXPECTED, "chunk")
    assert (await peer.reply())["type"] == "ready"
    assert worker.stats.chunks_dropped == 5
    peer.send(b"12")
    data = b"abcd"
    digest = hashlib.sha256(data).hexdigest()
    peer.send({"type": "put", "name": "g", "size": 4, "sha256": digest})  # abandons "f"
    assert (await peer.reply())["type"] == "ready"
    peer.send(data)
    peer.send({"type": "end", "name": "g"})
    assert (await peer.reply())["type"] == "ack"
    assert (job.dir / "inputs" / "g").read_bytes() == data
    assert (job.dir / ".partial" / f"{'c' * 64}.part").stat().st_size == 2  # "f" stays resumable


async def test_download_interrupted_by_close(
    link: Any, job: Job, store: ContentStore, tmp_path: Path, tools: Any
) -> None:
    out = job.dir / "outputs"
    out.mkdir(parents=True)
    tools.make_file(out / "big.bin", 6 * MiB, 9)
    job.results = [out / "big.bin"]
    job.endpoint(link.worker, store)
    client = ClientTransferEndpoint(link.client)
    closing: list[asyncio.Task[None]] = []

    def close_midway(done: int, _total: int) -> None:
        if done >= MiB and not closing:
            closing.append(asyncio.ensure_future(link.close()))

    with pytest.raises(ChannelClosedError):
        async with asyncio.timeout(T):
            await client.download(tmp_path / "dl", close_midway)
    async with asyncio.timeout(T):
        await closing[0]
    assert list((tmp_path / "dl").iterdir()) == []


async def test_a_dropped_download_resumes_from_a_verified_offset_on_a_new_channel(
    link_factory: LinkFactory, job: Job, store: ContentStore, tmp_path: Path, tools: Any
) -> None:
    out = job.dir / "outputs"
    out.mkdir(parents=True)
    (out / "a.txt").write_bytes(b"small result")
    big_size = 8 * MiB
    digest = tools.make_file(out / "big.bin", big_size, 11)
    job.results = [out / "a.txt", out / "big.bin"]
    total = big_size + len(b"small result")
    link1 = await link_factory()
    job.endpoint(link1.worker, store)
    client1 = ClientTransferEndpoint(link1.client)
    dropped: list[asyncio.Task[None]] = []

    def drop_at_half(done: int, _total: int) -> None:
        if done >= total // 2 and not dropped:
            dropped.append(asyncio.ensure_future(link1.close()))

    dest = tmp_path / "dl"
    with pytest.raises(DownloadInterrupted) as stop:
        async with asyncio.timeout(T):
            await client1.download(dest, drop_at_half, job_id="j", keep_partial=True)
    async with asyncio.timeout(T):
        await dropped[0]
    partial = stop.value.partial
    assert partial.name == "big.bin"
    assert total // 2 - len(b"small result") <= partial.offset < big_size
    assert list(partial.received) == ["a.txt"]
    assert not (dest / "j").exists()  # nothing published yet

    link2 = await link_factory()
    worker2 = job.endpoint(link2.worker, store)
    client2 = ClientTransferEndpoint(link2.client)
    async with asyncio.timeout(T):
        paths = await client2.download(dest, job_id="j", resume=partial)
    assert sorted(p.name for p in paths) == ["a.txt", "big.bin"]
    assert tools.sha256_file(dest / "j" / "big.bin") == digest
    assert (dest / "j" / "a.txt").read_bytes() == b"small result"
    sent_again = worker2.stats.chunk_bytes_sent
    assert sent_again == big_size - partial.offset  # from the verified offset; a.txt answered by `same`
    resent = sent_again - (total - client1.stats.chunk_bytes_received)
    assert 0 <= resent < TransferTuning().high_water  # below one chunk window
    assert (worker2.stats.files_resumed, worker2.stats.files_deduped) == (1, 1)
    assert sorted(p.name for p in dest.iterdir()) == ["j"]  # the staging folder is gone


async def test_a_resume_with_a_changed_prefix_starts_the_file_again(
    link_factory: LinkFactory, job: Job, store: ContentStore, tmp_path: Path, tools: Any
) -> None:
    out = job.dir / "outputs"
    out.mkdir(parents=True)
    digest = tools.make_file(out / "big.bin", 4 * MiB, 12)
    job.results = [out / "big.bin"]
    link1 = await link_factory()
    job.endpoint(link1.worker, store)
    client1 = ClientTransferEndpoint(link1.client)
    dropped: list[asyncio.Task[None]] = []

    def drop_at_half(done: int, total: int) -> None:
        if done >= total // 2 and not dropped:
            dropped.append(asyncio.ensure_future(link1.close()))

    with pytest.raises(DownloadInterrupted) as stop:
        async with asyncio.timeout(T):
            await client1.download(tmp_path / "dl", drop_at_half, job_id="j", keep_partial=True)
    async with asyncio.timeout(T):
        await dropped[0]
    partial = stop.value.partial
    with partial.part.open("r+b") as f:  # the kept prefix no longer matches the worker's file
        f.write(b"X")
    link2 = await link_factory()
    worker2 = job.endpoint(link2.worker, store)
    async with asyncio.timeout(T):
        await ClientTransferEndpoint(link2.client).download(tmp_path / "dl", job_id="j", resume=partial)
    assert worker2.stats.chunk_bytes_sent == 4 * MiB
    assert worker2.stats.files_resumed == 0
    assert tools.sha256_file(tmp_path / "dl" / "j" / "big.bin") == digest
