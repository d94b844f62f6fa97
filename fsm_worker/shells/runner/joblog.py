"""A detached job's bounded log files: one stream kept in ``NAME`` and ``NAME.1``, read by logical offset.

The wrapper (``wrapper.py``) writes the job's stdout and stderr through a ``BoundedLog`` each: once ``NAME``
holds ``max_bytes`` it becomes ``NAME.1`` (the older ``NAME.1`` is deleted) and a new ``NAME`` begins, so a
stream never takes more than ``2 * max_bytes`` on disk. Offsets are **logical**: bytes the job ever wrote to
the stream, not positions in a file. ``NAME.bases`` maps each kept file (by inode) to the logical offset of its
first byte; it is replaced atomically at every rotation, before the new file receives a byte.

``LogReader`` follows the stream across rotations from the earliest byte still kept. A reader that falls
more than one file behind finds its bytes deleted: it skips to the earliest kept byte and reports the gap,
so that its user drops the partial line there (progress in the lost bytes is lost, never repeated).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import BinaryIO

import attrs

from fsm_worker.shells.runner.detached import write_json_atomically

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MIN_MAX_BYTES = 4096


def previous_of(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def bases_of(path: Path) -> Path:
    return path.with_name(path.name + ".bases")


def _inode(handle: BinaryIO) -> int:
    return os.fstat(handle.fileno()).st_ino


def read_bases(path: Path) -> dict[int, int]:
    """Inode → logical offset of the first byte, for the kept files of the stream ``path`` ({} if unknown)."""
    try:
        data = json.loads(bases_of(path).read_text())
        return {int(ino): int(base) for ino, base in data["files"]}
    except (OSError, ValueError, TypeError, KeyError):
        return {}


def _write_bases(path: Path, files: list[tuple[int, int]]) -> None:
    write_json_atomically(bases_of(path), {"files": files})


def fresh_log(path: Path) -> BinaryIO:
    """An empty stream at ``path`` (older files of it removed), its bases written; the file opened to append."""
    previous_of(path).unlink(missing_ok=True)
    handle = open(path, "wb")  # noqa: SIM115  (the caller's to close)
    _write_bases(path, [(_inode(handle), 0)])
    return handle


@attrs.define(eq=False)
class BoundedLog:
    """Appends to the stream ``path``, rotating to ``path.1`` at ``max_bytes`` (``None``: never)."""

    path: Path
    max_bytes: int | None
    _handle: BinaryIO
    _base: int  # logical offset of the current file's first byte
    _size: int  # bytes in the current file

    @classmethod
    def append(cls, path: Path, max_bytes: int | None) -> BoundedLog:
        """Continue the stream at ``path`` (created empty, with its bases, when absent)."""
        if max_bytes is not None and max_bytes < MIN_MAX_BYTES:
            raise ValueError(f"job_log_max_bytes must be at least {MIN_MAX_BYTES}, got {max_bytes}")
        bases = read_bases(path)
        handle: BinaryIO
        try:
            handle = open(path, "ab")  # noqa: SIM115  (held by the writer until close)
        except OSError:
            handle = fresh_log(path)
        ino = _inode(handle)
        if ino not in bases:
            handle.close()
            handle, bases = fresh_log(path), {}
            ino = _inode(handle)
        return cls(path, max_bytes, handle, bases.get(ino, 0), handle.seek(0, os.SEEK_END))

    @property
    def written(self) -> int:
        """Logical offset after the last byte written (bytes the stream ever received)."""
        return self._base + self._size

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.max_bytes is not None and self._size >= self.max_bytes:
                self._rotate()
            room = len(view) if self.max_bytes is None else self.max_bytes - self._size
            written = self._handle.write(view[:room])
            self._size += written
            view = view[written:]
        self._handle.flush()

    def _rotate(self) -> None:
        old = (_inode(self._handle), self._base)
        self._handle.close()
        os.replace(self.path, previous_of(self.path))
        base = self.written
        self._handle = open(self.path, "wb")  # noqa: SIM115  (held until the next rotation)
        _write_bases(self.path, [old, (_inode(self._handle), base)])  # before the new file gets a byte
        self._base, self._size = base, 0

    def close(self) -> None:
        self._handle.close()


@attrs.define(eq=False)
class LogReader:
    """Reads the stream ``path`` from its earliest kept byte on, across rotations; ``position`` is logical."""

    path: Path
    position: int = 0
    _handle: BinaryIO | None = None
    _gap: bool = False

    def open(self) -> bool:
        """Start at the earliest kept byte (False: the stream does not exist). A start after logical 0 counts
        as a gap: the bytes before it were rotated away, so the first line read may be a line's tail."""
        bases = read_bases(self.path)
        if not bases:
            return self._open_unbased()
        self.position = min(bases.values())
        if not self._switch():
            return self._open_unbased()
        self._gap = self.position > 0
        return True

    def _open_unbased(self) -> bool:
        """A stream without bases (written by an older wrapper): one file, logical = file offset."""
        try:
            self._handle = open(self.path, "rb")  # noqa: SIM115  (held until close)
        except OSError:
            return False
        self.position = 0
        return True

    def take_gap(self) -> bool:
        """True once after the reader skipped bytes it could not read (rotated away before it got there)."""
        gap, self._gap = self._gap, False
        return gap

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes from ``position`` (empty: nothing more now; more may come later)."""
        while self._handle is not None:
            data = self._handle.read(size)
            if data:
                self.position += len(data)
                return data
            if not self._rotated():
                return b""
            data = self._handle.read(size)  # what the writer wrote before it rotated
            if data:
                self.position += len(data)
                return data
            if not self._switch():
                return b""
        return b""

    def _rotated(self) -> bool:
        assert self._handle is not None
        bases = read_bases(self.path)
        mine = bases.get(_inode(self._handle))
        return bool(bases) and (mine is None or mine < max(bases.values()))

    def _switch(self) -> bool:
        """Open the kept file that continues at ``position`` (or, after a gap, the earliest kept one)."""
        for _ in range(100):  # a rotation in progress: the bases and the names agree again at once
            bases = read_bases(self.path)
            later = sorted((base, ino) for ino, base in bases.items() if base >= self.position)
            if not later:
                return False
            base, ino = later[0]
            for candidate in (previous_of(self.path), self.path):
                try:
                    handle = open(candidate, "rb")  # noqa: SIM115  (kept if it is the next file)
                except OSError:
                    continue
                if _inode(handle) == ino:
                    if self._handle is not None:
                        self._handle.close()
                    self._handle = handle
                    if base > self.position:
                        log.warning("%s: %d bytes rotated away before they were read", self.path,
                                    base - self.position)  # fmt: skip
                        self._gap, self.position = True, base
                    return True
                handle.close()
        return False

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def read_log_tail(path: Path, limit: int) -> bytes:
    """The stream's last ``limit`` bytes (from ``path.1`` too when ``path`` holds fewer); empty if absent."""
    out = b""
    for candidate in (path, previous_of(path)):
        try:
            with open(candidate, "rb") as handle:
                end = handle.seek(0, os.SEEK_END)
                want = limit - len(out)
                handle.seek(max(0, end - want))
                out = handle.read(want) + out
        except OSError:
            break
        if len(out) >= limit:
            break
    return out


def disk_use(path: Path) -> int:
    """Bytes the stream's files take now (``path`` and ``path.1``)."""
    total = 0
    for candidate in (path, previous_of(path)):
        with contextlib.suppress(OSError):
            total += candidate.stat().st_size
    return total
