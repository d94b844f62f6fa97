"""The content store over real aiortc peers: proof of possession, privacy, reclaim, retention and quota."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

from fsm_worker.shells.transfer import (
    ClientTransferEndpoint,
    ContentStore,
    FrameCode,
    UploadStatus,
    WorkerTransferEndpoint,
)

T = 30.0
MiB = 1024 * 1024


def endpoint(channel: Any, job_dir: Path, store: ContentStore) -> WorkerTransferEndpoint:
    return WorkerTransferEndpoint(
        channel, job_dir, store, 64 * MiB, on_commit=lambda _p: None, results=lambda: None
    )


async def test_knowing_the_hash_is_not_enough_to_obtain_stored_content(
    link_factory: Any, tmp_path: Path, tools: Any
) -> None:
    store = ContentStore(tmp_path / "store")
    secret = tmp_path / "alice.slp"
    digest = tools.make_file(secret, 300_000, 11)
    alice_link = await link_factory()
    endpoint(alice_link.worker, tmp_path / "alice-job", store)
    async with asyncio.timeout(T):
        await ClientTransferEndpoint(alice_link.client).upload([secret])
    assert digest in store

    mallory_link = await link_factory()
    mallory_job = tmp_path / "mallory-job"
    endpoint(mallory_link.worker, mallory_job, store)
    mallory = tools.raw_peer(mallory_link.client)
    mallory.send({"type": "put", "name": "stolen.slp", "size": 300_000, "sha256": digest})
    challenge = await mallory.reply()
    assert challenge["type"] == "prove" and len(challenge["nonce"]) == 32
    mallory.send({"type": "proof", "name": "stolen.slp", "sha256": digest})  # the hash is all she has
    assert await mallory.reply() == {
        "type": "ready",
        "name": "stolen.slp",
        "offset": 0,
        "prefix_sha256": None,
    }
    mallory.send({"type": "end", "name": "stolen.slp"})
    assert (await mallory.reply())["code"] == FrameCode.SIZE_MISMATCH
    mallory.send({"type": "commit"})
    assert await mallory.reply() == {"type": "committed", "files": []}
    assert not (mallory_job / "inputs" / "stolen.slp").exists()

    # the store is private to the worker's user
    assert stat.S_IMODE((tmp_path / "store").stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path_for(digest).stat().st_mode) == 0o400


async def test_a_client_that_holds_the_bytes_still_skips_the_upload(
    link_factory: Any, tmp_path: Path, tools: Any
) -> None:
    store = ContentStore(tmp_path / "store")
    src = tmp_path / "shared.bin"
    tools.make_file(src, 2 * MiB, 12)
    first = await link_factory()
    endpoint(first.worker, tmp_path / "j1", store)
    async with asyncio.timeout(T):
        await ClientTransferEndpoint(first.client).upload([src])
    second = await link_factory()
    worker = endpoint(second.worker, tmp_path / "j2", store)
    client = ClientTransferEndpoint(second.client)
    async with asyncio.timeout(T):
        [uploaded] = await client.upload([src])
    assert uploaded.status is UploadStatus.DEDUPED
    assert client.stats.chunk_bytes_sent == worker.stats.chunk_bytes_received == 0


async def test_what_a_cancelled_job_uploaded_is_reclaimed(
    link_factory: Any, tmp_path: Path, tools: Any
) -> None:
    store = ContentStore(tmp_path / "store")
    own, shared = tmp_path / "own.bin", tmp_path / "shared.bin"
    own_digest = tools.make_file(own, 100_000, 13)
    shared_digest = tools.make_file(shared, 100_000, 14)
    other = await link_factory()
    endpoint(other.worker, tmp_path / "other-job", store)
    async with asyncio.timeout(T):
        await ClientTransferEndpoint(other.client).upload([shared])
    cancelled = await link_factory()
    job_dir = tmp_path / "cancelled-job"
    endpoint(cancelled.worker, job_dir, store)
    async with asyncio.timeout(T):
        await ClientTransferEndpoint(cancelled.client).upload([own, shared])
    assert own_digest in store and shared_digest in store
    assert store.reclaim_job(job_dir) == 1
    assert own_digest not in store
    assert shared_digest in store  # still used by the other job


async def test_the_store_is_collected_by_retention_then_lru_quota(
    link: Any, tmp_path: Path, tools: Any
) -> None:
    store = ContentStore(tmp_path / "store", retention=3600, quota_bytes=250_000)
    names = ["old.bin", "lru.bin", "recent.bin", "newest.bin"]
    digests = {}
    for i, name in enumerate(names):
        digests[name] = tools.make_file(tmp_path / name, 100_000, 20 + i)
    endpoint(link.worker, tmp_path / "job", store)
    async with asyncio.timeout(T):
        await ClientTransferEndpoint(link.client).upload([tmp_path / n for n in names])
    now = 1_000_000_000.0
    for age, name in zip([7200, 300, 200, 100], names, strict=True):
        os.utime(store.path_for(digests[name]), (now - age, now - age))
    freed = store.collect(now)
    assert freed == 200_000
    assert [n for n in names if digests[n] in store] == ["recent.bin", "newest.bin"]
    assert (tmp_path / "job" / "inputs" / "old.bin").stat().st_size == 100_000  # the job keeps its inputs
