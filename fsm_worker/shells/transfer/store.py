"""Worker-level content-addressed store: one read-only file per sha256."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

from fsm_worker.protocol.transfer.frames import SHA256_RE
from fsm_worker.shells.transfer.files import sha256_of

log = logging.getLogger(__name__)


class ContentStore:
    """Files named by their sha256 under ``root``; shared into job dirs by hard link (or copy).

    Entries are made read-only. A lookup checks type and size (cheap); with ``verify=True`` it
    re-hashes the entry and evicts it on mismatch. Methods block: call them from a thread.
    """

    def __init__(self, root: Path, *, link: bool = True, verify: bool = False) -> None:
        self.root = root
        self.link = link
        self.verify = verify
        root.mkdir(parents=True, exist_ok=True)

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

    def __contains__(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def add(self, src: Path, sha256: str) -> Path:
        """Put ``src`` (already verified to hash to ``sha256``) into the store."""
        dest = self.path_for(sha256)
        if dest.is_file() and dest.stat().st_size == src.stat().st_size:
            return dest
        self._place(src, dest)
        dest.chmod(0o444)
        return dest

    def materialize(self, sha256: str, size: int, dest: Path) -> bool:
        """Make ``dest`` hold the stored content; ``False`` if the store lacks it."""
        src = self.lookup(sha256, size)
        if src is None:
            return False
        self._place(src, dest)
        return True

    def _place(self, src: Path, dest: Path) -> None:
        """Atomically make ``dest`` a hard link to (or a copy of) ``src``."""
        fd, tmp_name = tempfile.mkstemp(prefix=".store-", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            tmp.unlink()
            linked = False
            if self.link:
                with contextlib.suppress(OSError):
                    os.link(src, tmp)
                    linked = True
            if not linked:
                shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
