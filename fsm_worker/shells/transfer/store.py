"""Worker-level content-addressed store: one private read-only file per sha256, collected by age and quota."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import stat
import time
from pathlib import Path

from fsm_worker.protocol.transfer.frames import SHA256_RE
from fsm_worker.protocol.transfer.store_policy import (
    DEFAULT_STORE_QUOTA_BYTES,
    DEFAULT_STORE_RETENTION,
    StoreEntry,
    evictions,
)
from fsm_worker.shells.transfer.files import proof_of_possession, sha256_of

log = logging.getLogger(__name__)

STORE_ADDED = ".store-added"  # in a job dir: the sha256s this job put into the store, one per line
_ENTRY_MODE = 0o400  # private to the worker's user, read-only
_DIR_MODE = 0o700


class ContentStore:
    """Files named by their sha256 under ``root``; shared into job dirs by hard link (or copy).

    Dedupe needs a proof of possession (see :meth:`proof`): knowing a sha256 is not enough to obtain
    the content. A lookup checks type and size (cheap); with ``verify=True`` it re-hashes the entry
    and evicts it on mismatch. :meth:`collect` deletes entries unused for ``retention`` seconds, then
    the least recently used ones above ``quota_bytes``; :meth:`reclaim_job` deletes what a cancelled
    job added. Methods block: call them from a thread.
    """

    def __init__(
        self,
        root: Path,
        *,
        link: bool = True,
        verify: bool = False,
        retention: float = DEFAULT_STORE_RETENTION,
        quota_bytes: int = DEFAULT_STORE_QUOTA_BYTES,
    ) -> None:
        self.root = root
        self.link = link
        self.verify = verify
        self.retention = retention
        self.quota_bytes = quota_bytes
        root.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
        root.chmod(_DIR_MODE)

    def path_for(self, sha256: str) -> Path:
        """Where the entry for ``sha256`` lives."""
        if not SHA256_RE.fullmatch(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256

    def lookup(self, sha256: str, size: int) -> Path | None:
        """The entry for ``sha256`` if present and sane, else ``None`` (a bad entry is evicted)."""
        path = self.path_for(sha256)
        try:
            st = path.lstat()
        except FileNotFoundError:
            return None
        ok = stat.S_ISREG(st.st_mode) and st.st_size == size
        if ok and self.verify:
            ok = sha256_of(path).hexdigest() == sha256
        if not ok:
            log.warning("content store: evicting bad entry %s", sha256)
            path.unlink(missing_ok=True)
            return None
        return path

    def proof(self, sha256: str, size: int, nonce: str) -> str | None:
        """sha256 of ``nonce`` (ASCII) followed by the entry's bytes: what a client holding them sends."""
        path = self.lookup(sha256, size)
        return None if path is None else proof_of_possession(path, nonce)

    def __contains__(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def add(self, src: Path, sha256: str, *, job_dir: Path | None = None) -> Path:
        """Put ``src`` (already verified to hash to ``sha256``) into the store; ``job_dir`` records who added it."""
        dest = self.path_for(sha256)
        if dest.is_file() and dest.stat().st_size == src.stat().st_size:
            self._touch(dest)
            return dest
        self._place(src, dest)  # just written: its mtime is already "last used"
        dest.chmod(_ENTRY_MODE)
        if job_dir is not None:
            with (job_dir / STORE_ADDED).open("a", encoding="ascii") as added:
                added.write(sha256 + "\n")
        return dest

    def materialize(self, sha256: str, size: int, dest: Path) -> bool:
        """Make ``dest`` hold the stored content; ``False`` if the store lacks it."""
        src = self.lookup(sha256, size)
        if src is None:
            return False
        self._place(src, dest)
        self._touch(src)
        return True

    def collect(self, now: float | None = None) -> int:
        """Delete expired entries, then the least recently used above the quota; returns bytes freed."""
        entries: list[StoreEntry] = []
        for item in os.scandir(self.root):
            if SHA256_RE.fullmatch(item.name) and item.is_file(follow_symlinks=False):
                st = item.stat(follow_symlinks=False)
                entries.append(StoreEntry(item.name, st.st_size, st.st_mtime))
        sizes = {e.sha256: e.size for e in entries}
        victims = evictions(entries, time.time() if now is None else now, self.retention, self.quota_bytes)
        for sha256 in victims:
            (self.root / sha256).unlink(missing_ok=True)
        if victims:
            log.info("content store: collected %d entries", len(victims))
        return sum(sizes[v] for v in victims)

    def reclaim_job(self, job_dir: Path) -> int:
        """Delete what ``job_dir``'s uploads added, unless another job shares it; returns entries deleted.

        Call it for a cancelled job, before or after removing its directory. Deleting an entry never
        breaks a job that already holds the file (hard links keep their content).
        """
        try:
            added = (job_dir / STORE_ADDED).read_text(encoding="ascii").split()
        except OSError:
            return 0
        deleted = 0
        for sha256 in dict.fromkeys(added):
            with contextlib.suppress(ValueError, FileNotFoundError):
                path = self.path_for(sha256)
                if path.lstat().st_nlink <= 2:  # the store and (at most) the cancelled job
                    path.unlink()
                    deleted += 1
        return deleted

    @staticmethod
    def _touch(path: Path) -> None:
        with contextlib.suppress(OSError):
            os.utime(path)  # mtime = last used (the LRU order)

    def _place(self, src: Path, dest: Path) -> None:
        """Atomically make ``dest`` a hard link to (or a copy of) ``src``.

        The link (or copy) is made under a fresh random name next to ``dest`` and renamed over it: no
        placeholder file is created and removed first (each costs a metadata write per upload).
        """
        tmp = dest.parent / f".store-{secrets.token_hex(8)}"
        try:
            linked = False
            if self.link:
                with contextlib.suppress(OSError):
                    os.link(src, tmp)
                    linked = True
            if not linked:
                shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
