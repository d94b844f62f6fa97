"""Result files hashed ahead in threads, small ones in batches: same digests, errors per file (real files)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

from fsm_worker.shells.transfer import ClientTransferEndpoint, ContentStore, WorkerTransferEndpoint
from fsm_worker.shells.transfer.files import HashAhead

T = 30.0
MiB = 1024 * 1024


def write(path: Path, data: bytes) -> tuple[str, Path, int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path.name, path, len(data)


async def test_every_file_gets_its_own_digest_across_batches_and_threads(tmp_path: Path) -> None:
    files = [write(tmp_path / f"f{i:03d}", os.urandom(i * 37)) for i in range(150)]  # batches of 16 files
    files.append(write(tmp_path / "big", os.urandom(3 * MiB)))  # a batch of its own (over batch_bytes)
    ahead = HashAhead(files, threads=3, batch_bytes=1 * MiB, batch_files=16)
    for name, path, _size in reversed(files):  # asked in any order
        assert await ahead.digest(name) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "f000" in ahead and "nope" not in ahead


async def test_a_file_that_cannot_be_read_fails_alone(tmp_path: Path) -> None:
    files = [write(tmp_path / "a", b"A"), ("gone", tmp_path / "gone", 5), write(tmp_path / "c", b"C")]
    ahead = HashAhead(files, batch_files=8)
    assert await ahead.digest("a") == hashlib.sha256(b"A").hexdigest()
    try:
        await ahead.digest("gone")
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("a missing file must raise")
    assert await ahead.digest("c") == hashlib.sha256(b"C").hexdigest()


async def test_cancel_before_the_first_turn_hashes_nothing(tmp_path: Path) -> None:
    files = [write(tmp_path / f"f{i}", os.urandom(1000)) for i in range(20)]
    ahead = HashAhead(files, threads=1, batch_files=1)
    ahead.cancel()  # the hashing tasks have not had a turn yet
    await asyncio.sleep(0.05)
    assert [name for name, _, _ in files if ahead._ready[name].is_set()] == []


async def test_many_small_results_download_byte_exact(link: Any, tmp_path: Path) -> None:
    """300 small files and one larger one in nested folders, over real aiortc: every byte and name arrives."""
    job_dir = tmp_path / "job"
    outputs = job_dir / "outputs"
    expected: dict[str, bytes] = {}
    for i in range(300):
        rel = f"d{i % 7}/r{i:03d}.bin"
        expected[rel] = os.urandom(i * 13 % 5000)
    expected["model/best.ckpt"] = os.urandom(2 * MiB + 5)
    for rel, data in expected.items():
        write(outputs / rel, data)
    WorkerTransferEndpoint(
        link.worker,
        job_dir,
        ContentStore(tmp_path / "store"),
        1 << 30,
        on_commit=lambda _p: None,
        results=lambda: sorted(p for p in outputs.rglob("*") if p.is_file()),
    )
    client = ClientTransferEndpoint(link.client)
    async with asyncio.timeout(T):
        paths = await client.download(tmp_path / "out")
    got = {p.relative_to(tmp_path / "out").as_posix(): p.read_bytes() for p in paths}
    assert got == expected
    assert client.stats.files_deduped == 0
