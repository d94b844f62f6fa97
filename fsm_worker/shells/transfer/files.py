"""Streaming file I/O for the receiver: hash while writing, never hold a whole file."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from fsm_worker.shells.transfer.errors import FrameCode, FrameError, TransferError

READ_BLOCK = 256 * 1024
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def sha256_of(path: Path, limit: int | None = None) -> hashlib._Hash:
    """Hash the first ``limit`` bytes (all if ``None``) of ``path`` in blocks (blocking; use a thread)."""
    hasher = hashlib.sha256()
    remaining = limit
    with path.open("rb") as f:
        while remaining is None or remaining > 0:
            block = f.read(READ_BLOCK if remaining is None else min(READ_BLOCK, remaining))
            if not block:
                break
            hasher.update(block)
            if remaining is not None:
                remaining -= len(block)
    return hasher


class HashAhead:
    """sha256 of many files, computed ahead of need in a few threads; small files go in batches.

    One download hashes every result before its manifest goes out. Asked file by file, each small file
    would cost a thread round trip, and one core would hash while the other idles; here ``threads``
    threads take the files in the given order, up to ``batch_files`` files or ``batch_bytes`` bytes per
    thread call, and :meth:`digest` waits for one file's turn.
    """

    def __init__(
        self,
        files: Sequence[tuple[str, Path, int]],
        *,
        threads: int = 2,
        batch_bytes: int = 8 * 1024 * 1024,
        batch_files: int = 64,
    ) -> None:
        self._results: dict[str, tuple[str, None] | tuple[None, OSError]] = {}
        self._ready = {name: asyncio.Event() for name, _, _ in files}
        self._batches: deque[list[tuple[str, Path]]] = deque()
        batch: list[tuple[str, Path]] = []
        size = 0
        for name, path, file_size in files:
            if batch and (len(batch) >= batch_files or size + file_size > batch_bytes):
                self._batches.append(batch)
                batch, size = [], 0
            batch.append((name, path))
            size += file_size
        if batch:
            self._batches.append(batch)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(), name="hash-ahead") for _ in range(threads)]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._batches:
            batch = self._batches.popleft()
            results = await loop.run_in_executor(None, _hash_files, [path for _, path in batch])
            for (name, _), result in zip(batch, results, strict=True):
                self._results[name] = result
                self._ready[name].set()

    def __contains__(self, name: str) -> bool:
        return name in self._ready

    async def digest(self, name: str) -> str:
        """The sha256 (hex) of the file called ``name``; raises the ``OSError`` that reading it raised."""
        await self._ready[name].wait()
        digest, error = self._results[name]
        if error is not None:
            raise error
        assert digest is not None
        return digest

    def cancel(self) -> None:
        """Stop hashing (a thread call already running ends on its own)."""
        for task in self._tasks:
            task.cancel()


def _hash_files(paths: list[Path]) -> list[tuple[str, None] | tuple[None, OSError]]:
    """sha256 of each file, or the ``OSError`` that reading it raised (blocking; run in a thread)."""
    out: list[tuple[str, None] | tuple[None, OSError]] = []
    for path in paths:
        try:
            out.append((sha256_of(path).hexdigest(), None))
        except OSError as exc:
            out.append((None, exc))
    return out


def proof_of_possession(path: Path, nonce: str) -> str:
    """sha256 of ``nonce``'s ASCII bytes followed by the whole file (blocking; use a thread)."""
    hasher = hashlib.sha256(nonce.encode("ascii"))
    with path.open("rb") as f:
        while block := f.read(READ_BLOCK):
            hasher.update(block)
    return hasher.hexdigest()


def _open_for_write(path: Path, offset: int, mode: int = 0o600) -> BinaryIO:
    fd = os.open(path, _OPEN_FLAGS, mode)
    try:
        os.ftruncate(fd, offset)
        f = os.fdopen(fd, "r+b", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    f.seek(offset)
    return f


class FileSink:
    """Receives one file's chunks into ``part_path``, hashing as it goes.

    Opened at ``offset`` with a hasher that already covers bytes ``[0, offset)`` (resume).
    The partial file survives :meth:`close`; :meth:`finish` verifies size and sha256.
    """

    def __init__(
        self,
        part_path: Path,
        name: str,
        size: int,
        sha256: str,
        offset: int = 0,
        hasher: hashlib._Hash | None = None,
        *,
        mode: int = 0o600,
    ) -> None:
        self.part_path = part_path
        self.name = name
        self.size = size
        self.sha256 = sha256
        self.done = offset
        self._hasher = hasher if hasher is not None else hashlib.sha256()
        self._file: BinaryIO | None = _open_for_write(part_path, offset, mode)

    def write(self, data: bytes) -> None:
        """Append one chunk; a chunk past the announced size is refused without writing."""
        if self._file is None:
            raise TransferError(FrameCode.UNEXPECTED, "file already closed", self.name)
        if self.done + len(data) > self.size:
            raise FrameError(
                f"{self.name!r}: chunk would exceed the announced size {self.size}",
                FrameCode.SIZE_MISMATCH,
                self.name,
            )
        self._file.write(data)
        self._hasher.update(data)
        self.done += len(data)

    def finish(self) -> None:
        """Close and verify; a hash mismatch deletes the partial file (its bytes are wrong)."""
        self.close()
        if self.done != self.size:
            raise FrameError(
                f"{self.name!r}: received {self.done} of {self.size} bytes",
                FrameCode.SIZE_MISMATCH,
                self.name,
            )
        digest = self._hasher.hexdigest()
        if digest != self.sha256:
            self.part_path.unlink(missing_ok=True)
            raise FrameError(
                f"{self.name!r}: sha256 {digest} does not match the announced {self.sha256}",
                FrameCode.HASH_MISMATCH,
                self.name,
            )

    def digest(self) -> str:
        """Close the file and return the sha256 of everything received."""
        self.close()
        return self._hasher.hexdigest()

    def close(self) -> None:
        """Close the file, keeping what was received (resumable)."""
        if self._file is not None:
            self._file.close()
            self._file = None
