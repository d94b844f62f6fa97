"""File-name and target checks: writes stay inside one directory, links are refused."""

from __future__ import annotations

import stat
from pathlib import Path

from fsm_worker.shells.transfer.errors import ErrorCode, ProtocolError

MAX_NAME_BYTES = 255


def check_name(name: str) -> str:
    """Return ``name`` if it is a plain file name (no directories, no ``..``, no NUL/control chars)."""
    if not name or name in (".", ".."):
        raise ProtocolError(f"name {name!r} is not a file name", ErrorCode.BAD_NAME)
    if "/" in name or "\\" in name:
        raise ProtocolError(f"name {name!r} contains a path separator", ErrorCode.BAD_NAME)
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise ProtocolError(f"name {name!r} contains NUL or control characters", ErrorCode.BAD_NAME)
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProtocolError(f"name {name!r} is not valid UTF-8", ErrorCode.BAD_NAME) from exc
    if len(encoded) > MAX_NAME_BYTES:
        raise ProtocolError(f"name is longer than {MAX_NAME_BYTES} bytes", ErrorCode.BAD_NAME)
    return name


def ensure_real_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if missing; refuse it if it is a symlink or not a directory."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        path.mkdir(parents=True, exist_ok=True)
        st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise ProtocolError(f"{path.name!r} is a symbolic link", ErrorCode.LINK_REFUSED)
    if not stat.S_ISDIR(st.st_mode):
        raise ProtocolError(f"{path.name!r} is not a directory", ErrorCode.LINK_REFUSED)
    return path


def safe_target(directory: Path, name: str) -> Path:
    """``directory/name`` for writing: the name is plain and an existing entry is a regular file."""
    target = directory / check_name(name)
    try:
        st = target.lstat()
    except FileNotFoundError:
        return target
    if stat.S_ISLNK(st.st_mode):
        raise ProtocolError(f"{name!r} exists as a symbolic link; refusing to write", ErrorCode.LINK_REFUSED)
    if not stat.S_ISREG(st.st_mode):
        raise ProtocolError(f"{name!r} exists and is not a regular file", ErrorCode.LINK_REFUSED)
    return target


def regular_file_size(path: Path) -> int | None:
    """Size of ``path`` if it is a regular file (not following links), else ``None``."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None
