"""File-name and target checks: writes stay inside one directory, links are refused."""

from __future__ import annotations

import stat
from pathlib import Path

from fsm_worker.protocol.transfer.errors import FrameCode, FrameError
from fsm_worker.protocol.transfer.paths import MAX_NAME_BYTES, check_name

__all__ = ["MAX_NAME_BYTES", "check_name", "ensure_real_dir", "regular_file_size", "safe_target"]


def ensure_real_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if missing; refuse it if it is a symlink or not a directory."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        path.mkdir(parents=True, exist_ok=True)
        st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise FrameError(f"{path.name!r} is a symbolic link", FrameCode.LINK_REFUSED)
    if not stat.S_ISDIR(st.st_mode):
        raise FrameError(f"{path.name!r} is not a directory", FrameCode.LINK_REFUSED)
    return path


def safe_target(directory: Path, name: str) -> Path:
    """``directory/name`` for writing: the name is plain and an existing entry is a regular file."""
    target = directory / check_name(name)
    try:
        st = target.lstat()
    except FileNotFoundError:
        return target
    if stat.S_ISLNK(st.st_mode):
        raise FrameError(f"{name!r} exists as a symbolic link; refusing to write", FrameCode.LINK_REFUSED)
    if not stat.S_ISREG(st.st_mode):
        raise FrameError(f"{name!r} exists and is not a regular file", FrameCode.LINK_REFUSED)
    return target


def regular_file_size(path: Path) -> int | None:
    """Size of ``path`` if it is a regular file (not following links), else ``None``."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None
