"""Results keep their relative paths; a rogue worker cannot overwrite or escape; limits per job (real aiortc)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fsm_worker.protocol.transfer.download import DownloadLimits
from fsm_worker.shells.transfer import (
    ClientTransferEndpoint,
    ContentStore,
    FrameCode,
    RemoteTransferError,
    TransferError,
    WorkerTransferEndpoint,
)

T = 30.0


def host_results(job_dir: Path) -> list[Path]:
    """What the worker host hands the endpoint: every file under outputs/ (following links, as rglob does)."""
    outputs = job_dir / "outputs"
    return sorted(p for p in outputs.rglob("*") if p.is_file())


def serve(channel: Any, job_dir: Path, store: ContentStore, **kwargs: Any) -> WorkerTransferEndpoint:
    return WorkerTransferEndpoint(
        channel,
        job_dir,
        store,
        1 << 30,
        on_commit=lambda _p: None,
        results=lambda: host_results(job_dir),
        **kwargs,
    )


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "store")


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_results_keep_their_relative_paths_in_a_fresh_job_folder(
    link: Any, store: ContentStore, tmp_path: Path, umask_022: None
) -> None:
    job_dir = tmp_path / "job"
    for rel, text in {"a/x.txt": "A", "b/x.txt": "B", "model/sub/best.ckpt": "ckpt", "top.txt": "T"}.items():
        (job_dir / "outputs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (job_dir / "outputs" / rel).write_text(text)
    serve(link.worker, job_dir, store)
    client = ClientTransferEndpoint(link.client)
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.txt").write_text("mine")  # an existing file beside the job folder stays untouched
    async with asyncio.timeout(T):
        paths = await client.download(out, job_id="job-1")
    base = out / "job-1"
    assert sorted(p.relative_to(base).as_posix() for p in paths) == [
        "a/x.txt",
        "b/x.txt",
        "model/sub/best.ckpt",
        "top.txt",
    ]
    assert (base / "a" / "x.txt").read_text() == "A"
    assert (base / "b" / "x.txt").read_text() == "B"
    assert (base / "model" / "sub" / "best.ckpt").read_text() == "ckpt"
    assert (out / "x.txt").read_text() == "mine"
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(base.stat().st_mode) == 0o755
    assert sorted(p.name for p in out.iterdir()) == ["job-1", "x.txt"]  # no staging left behind


async def test_a_repeat_download_of_identical_results_is_free(
    link: Any, store: ContentStore, tmp_path: Path
) -> None:
    job_dir = tmp_path / "job"
    results = {"a/x.txt": b"A" * 70_000, "model/best.ckpt": b"ckpt" * 50_000, "top.txt": b"T"}
    for rel, data in results.items():
        (job_dir / "outputs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (job_dir / "outputs" / rel).write_bytes(data)
    worker = serve(link.worker, job_dir, store)
    client = ClientTransferEndpoint(link.client)
    out = tmp_path / "out"
    async with asyncio.timeout(T):
        first = await client.download(out, job_id="job-1")
    sent = worker.stats.chunk_bytes_sent
    assert sent == sum(len(d) for d in results.values())

    (out / "job-1" / "top.txt").unlink()  # one file gone locally: only it is sent again
    progress: list[tuple[int, int]] = []
    async with asyncio.timeout(T):
        again = await client.download(out, job_id="job-1", on_progress=lambda d, t: progress.append((d, t)))
    assert again == first
    assert worker.stats.chunk_bytes_sent - sent == 1
    assert worker.stats.files_deduped == client.stats.files_deduped == 2
    assert progress[-1] == (sum(len(d) for d in results.values()),) * 2
    for rel, data in results.items():
        assert (out / "job-1" / rel).read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == ["job-1"]  # no staging left behind


async def test_a_repeat_download_into_a_shared_folder_is_free_for_the_results_received_there(
    link: Any, store: ContentStore, tmp_path: Path
) -> None:
    """Without a job id (straight into `out/`): the names received before are offered by content; other
    files of the folder are never looked at or named to the worker."""
    job_dir = tmp_path / "job"
    results = {"a/x.txt": b"A" * 70_000, "top.txt": b"T" * 10}
    for rel, data in results.items():
        (job_dir / "outputs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (job_dir / "outputs" / rel).write_bytes(data)
    worker = serve(link.worker, job_dir, store)
    client = ClientTransferEndpoint(link.client)
    out = tmp_path / "out"
    out.mkdir()
    (out / "private.txt").write_text("not the worker's business")
    async with asyncio.timeout(T):
        first = await client.download(out)
    names = [path.relative_to(out).as_posix() for path in first]
    sent = worker.stats.chunk_bytes_sent
    assert sent == sum(len(d) for d in results.values())
    frames: list[str] = []
    original = link.client.send

    def recording_send(data: Any) -> Any:
        if isinstance(data, str):
            frames.append(data)
        return original(data)

    link.client.send = recording_send
    (out / "top.txt").unlink()  # gone locally: only it is sent again
    async with asyncio.timeout(T):
        again = await client.download(out, expect=names)
    assert again == first
    assert worker.stats.chunk_bytes_sent - sent == len(results["top.txt"])
    assert client.stats.files_deduped == 1
    [fetch] = [frame for frame in frames if "fetch_results" in frame]
    assert "a/x.txt" in fetch and "private.txt" not in fetch
    for rel, data in results.items():
        assert (out / rel).read_bytes() == data


async def test_a_repeat_download_never_replaces_different_content(
    link: Any, store: ContentStore, tmp_path: Path
) -> None:
    job_dir = tmp_path / "job"
    (job_dir / "outputs").mkdir(parents=True)
    (job_dir / "outputs" / "same.txt").write_text("same")
    (job_dir / "outputs" / "x.txt").write_text("worker")
    serve(link.worker, job_dir, store)
    client = ClientTransferEndpoint(link.client)
    out = tmp_path / "out"
    (out / "job-1").mkdir(parents=True)
    (out / "job-1" / "x.txt").write_text("mine")  # different content under a result's name
    async with asyncio.timeout(T):
        with pytest.raises(TransferError) as err:
            await client.download(out, job_id="job-1")
    assert err.value.code == FrameCode.EXISTS
    assert "x.txt" in err.value.message
    assert (out / "job-1" / "x.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "job-1").iterdir()) == ["x.txt"]  # nothing published
    assert sorted(p.name for p in out.iterdir()) == ["job-1"]

    (out / "job-1" / "x.txt").write_text("worker")  # shared destination: identical content is done
    (out / "same.txt").write_text("same")
    async with asyncio.timeout(T):
        paths = await client.download(out / "job-1")
    assert sorted(p.name for p in paths) == ["same.txt", "x.txt"]
    assert (out / "job-1" / "x.txt").read_text() == "worker"


@pytest.mark.parametrize("kind", ["file-link", "dir-link", "fifo"])
async def test_result_links_and_special_files_are_refused(
    link: Any, store: ContentStore, tmp_path: Path, kind: str
) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key.pem").write_text("worker secret")
    job_dir = tmp_path / "job"
    outputs = job_dir / "outputs"
    outputs.mkdir(parents=True)
    (outputs / "ok.txt").write_text("fine")
    if kind == "file-link":
        (outputs / "key.pem").symlink_to(secret / "key.pem")
    elif kind == "dir-link":
        (outputs / "linked").symlink_to(secret, target_is_directory=True)
    else:
        os.mkfifo(outputs / "pipe")
    extra = {"fifo": [outputs / "pipe"], "dir-link": [outputs / "linked" / "key.pem"]}.get(kind, [])
    results = [*host_results(job_dir), *extra]  # a host that follows links would list these
    WorkerTransferEndpoint(
        link.worker, job_dir, store, 1 << 20, on_commit=lambda _p: None, results=lambda: results
    )
    client = ClientTransferEndpoint(link.client)
    async with asyncio.timeout(T):
        with pytest.raises(RemoteTransferError) as err:
            await client.download(tmp_path / "out", job_id="j")
    assert err.value.code == FrameCode.LINK_REFUSED
    assert not (tmp_path / "out" / "j").exists()
    assert list((tmp_path / "out").iterdir()) == []


class RogueWorker:
    """Answers ``fetch_results`` with whatever frames a hostile worker likes."""

    def __init__(self, peer: Any) -> None:
        self.peer = peer

    async def serve(
        self,
        files: list[tuple[str, bytes]],
        count: int | None = None,
        total: int | None = None,
        manifest: list[tuple[str, bytes]] | None = None,
    ) -> None:
        request = await self.peer.reply()
        assert request == {"type": "fetch_results"}
        announced_total = sum(len(d) for _, d in files) if total is None else total
        self.peer.send(
            {
                "type": "results",
                "count": len(files) if count is None else count,
                "total_size": announced_total,
            }
        )
        listed = files if manifest is None else manifest
        entries = [{"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in listed]
        self.peer.send({"type": "manifest", "files": entries})
        for name, data in files:
            self.peer.send(
                {"type": "file", "name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            )
            if data:
                self.peer.send(data)
            self.peer.send({"type": "end", "name": name})
        self.peer.send({"type": "results_done", "count": len(files)})


@pytest.mark.parametrize(
    ("manifest", "fragment"),
    [
        ([("a.txt", b"other"), ("b.txt", b"two")], "does not match the manifest entry 'a.txt'"),
        ([("b.txt", b"one"), ("a.txt", b"two")], "does not match the manifest entry 'b.txt'"),
    ],
)
async def test_results_must_match_the_manifest(
    link: Any, tmp_path: Path, tools: Any, manifest: list[tuple[str, bytes]], fragment: str
) -> None:
    out = tmp_path / "out"
    client = ClientTransferEndpoint(link.client)
    rogue = RogueWorker(tools.raw_peer(link.worker))
    async with asyncio.timeout(T):
        serving = asyncio.ensure_future(
            rogue.serve([("a.txt", b"one"), ("b.txt", b"two")], manifest=manifest)
        )
        with pytest.raises(TransferError) as err:
            await client.download(out, job_id="j")
        await serving
    assert err.value.code == FrameCode.UNEXPECTED
    assert fragment in err.value.message
    assert list(out.iterdir()) == []  # no staging, no partial file


@pytest.mark.parametrize(
    ("files", "code"),
    [
        ([("../escape.txt", b"x")], FrameCode.BAD_NAME),
        ([("/etc/evil", b"x")], FrameCode.BAD_NAME),
        ([("a//b", b"x")], FrameCode.BAD_NAME),
        ([("nul\x00", b"x")], FrameCode.BAD_NAME),
        ([("x.txt", b"first"), ("x.txt", b"second")], FrameCode.BAD_NAME),
        ([("a", b"file"), ("a/b", b"below a file")], FrameCode.BAD_NAME),
    ],
)
async def test_rogue_worker_cannot_escape_or_overwrite(
    link: Any, tmp_path: Path, tools: Any, files: list[tuple[str, bytes]], code: FrameCode
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "escape.txt").write_text("mine")
    client = ClientTransferEndpoint(link.client)
    rogue = RogueWorker(tools.raw_peer(link.worker))
    async with asyncio.timeout(T):
        serving = asyncio.ensure_future(rogue.serve(files))
        with pytest.raises(TransferError) as err:
            await client.download(out / "job", job_id="j1")
        await serving
    assert err.value.code == code
    assert (out / "escape.txt").read_text() == "mine"
    assert list((out / "job").iterdir()) == []  # nothing kept from a refused download
    assert not (tmp_path / "escape.txt").exists()


async def test_rogue_worker_never_replaces_files_in_a_shared_destination(
    link: Any, tmp_path: Path, tools: Any
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".bashrc").write_text("mine")
    client = ClientTransferEndpoint(link.client)
    rogue = RogueWorker(tools.raw_peer(link.worker))
    async with asyncio.timeout(T):
        serving = asyncio.ensure_future(rogue.serve([(".bashrc", b"evil"), ("data.csv", b"1,2")]))
        with pytest.raises(TransferError) as err:
            await client.download(out)  # no job id: straight into out/, still never replacing
        await serving
    assert err.value.code == FrameCode.EXISTS
    assert (out / ".bashrc").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == [".bashrc"]

    link.worker.remove_all_listeners("message")
    rogue2 = RogueWorker(tools.raw_peer(link.worker))
    async with asyncio.timeout(T):  # with a job id the same files land in their own folder
        serving = asyncio.ensure_future(rogue2.serve([(".bashrc", b"evil"), ("data.csv", b"1,2")]))
        paths = await client.download(out, job_id="job-7")
        await serving
    assert (out / ".bashrc").read_text() == "mine"
    assert sorted(p.relative_to(out).as_posix() for p in paths) == ["job-7/.bashrc", "job-7/data.csv"]


@pytest.mark.parametrize(
    ("limits", "count", "total", "code", "setting"),
    [
        (DownloadLimits(max_files=2), None, None, FrameCode.TOO_MANY_FILES, "max_download_files = 2"),
        (
            DownloadLimits(max_files=2),
            1,
            None,
            FrameCode.UNEXPECTED,
            "more files than the 1 announced",
        ),  # lies
        (DownloadLimits(max_bytes=100), None, None, FrameCode.TOO_LARGE, "max_download_bytes = 100"),
        (DownloadLimits(max_bytes=100), None, 10, FrameCode.TOO_LARGE, "max_download_bytes = 100"),  # lies
    ],
)
async def test_download_count_and_size_are_capped(
    link: Any,
    tmp_path: Path,
    tools: Any,
    limits: DownloadLimits,
    count: int | None,
    total: int | None,
    code: FrameCode,
    setting: str,
) -> None:
    client = ClientTransferEndpoint(link.client, download_limits=limits)
    rogue = RogueWorker(tools.raw_peer(link.worker))
    files = [(f"f{i}.bin", bytes(60)) for i in range(3)]
    async with asyncio.timeout(T):
        serving = asyncio.ensure_future(rogue.serve(files, count, total))
        with pytest.raises(TransferError) as err:
            await client.download(tmp_path / "out", job_id="j")
        await serving
    assert err.value.code == code
    assert setting in err.value.message
    assert list((tmp_path / "out").iterdir()) == []


async def test_input_file_count_is_limited_per_job(link: Any, store: ContentStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}.txt").write_text(f"file {i}")
    worker = serve(link.worker, tmp_path / "job", store, max_input_files=3)
    client = ClientTransferEndpoint(link.client)
    async with asyncio.timeout(T):
        await client.upload([src / f"f{i}.txt" for i in range(3)])
        with pytest.raises(RemoteTransferError) as err:
            await client.upload([src / "f3.txt"])
        (src / "f0.txt").write_text("replaced")
        await client.upload([src / "f0.txt"])  # replacing an input does not count as a new file
    assert err.value.code == FrameCode.TOO_MANY_FILES
    assert "max_input_files = 3" in err.value.message
    assert sorted(p.name for p in (tmp_path / "job" / "inputs").iterdir()) == ["f0.txt", "f1.txt", "f2.txt"]
    assert (tmp_path / "job" / "inputs" / "f0.txt").read_text() == "replaced"
    assert worker.stats.files_received == 4


async def test_a_put_never_rescans_the_job_directory(
    link: Any, store: ContentStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_dir = tmp_path / "job"
    src = tmp_path / "src"
    src.mkdir()
    paths = []
    for i in range(30):
        (src / f"f{i}").write_bytes(b"%d" % i)
        paths.append(src / f"f{i}")
    scans: list[str] = []
    real_scandir = os.scandir

    def counting_scandir(path: Any = ".") -> Any:
        if str(job_dir) in str(path):
            scans.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counting_scandir)
    worker = serve(link.worker, job_dir, store, max_input_files=100)
    client = ClientTransferEndpoint(link.client)
    async with asyncio.timeout(T):
        await client.upload(paths)
    assert worker.stats.files_received == 30
    assert len(scans) <= 2  # the one scan at start (inputs/, .partial/), none per put
