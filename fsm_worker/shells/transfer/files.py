"""Streaming file I/O for the receiver: hash while writing, never hold a whole file."""

from __future__ import annotations

import hashlib
import os
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
