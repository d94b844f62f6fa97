"""Pure name checks: plain file names for inputs, safe relative paths for results."""

from __future__ import annotations

from fsm_worker.protocol.transfer.errors import FrameCode, FrameError

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_PATH_DEPTH = 32


def check_name(name: str) -> str:
    """Return ``name`` if it is a plain file name (no directories, no ``..``, no NUL/control chars)."""
    if not name or name in (".", ".."):
        raise FrameError(f"name {name!r} is not a file name", FrameCode.BAD_NAME)
    if "/" in name or "\\" in name:
        raise FrameError(f"name {name!r} contains a path separator", FrameCode.BAD_NAME)
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise FrameError(f"name {name!r} contains NUL or control characters", FrameCode.BAD_NAME)
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FrameError(f"name {name!r} is not valid UTF-8", FrameCode.BAD_NAME) from exc
    if len(encoded) > MAX_NAME_BYTES:
        raise FrameError(f"name is longer than {MAX_NAME_BYTES} bytes", FrameCode.BAD_NAME)
    return name


def check_relative_path(path: str) -> str:
    """Return ``path`` if it is a safe relative POSIX path: plain names joined by ``/``.

    Refused: empty, absolute, ``\\``, empty / ``.`` / ``..`` components, NUL or control characters,
    components over 255 bytes, more than 32 levels or more than 4096 bytes in total.
    """
    if path.startswith("/"):
        raise FrameError(f"path {path!r} is absolute", FrameCode.BAD_NAME)
    parts = path.split("/")
    if len(parts) > MAX_PATH_DEPTH:
        raise FrameError(f"path {path!r} is deeper than {MAX_PATH_DEPTH} levels", FrameCode.BAD_NAME)
    for part in parts:
        try:
            check_name(part)
        except FrameError as exc:
            raise FrameError(f"path {path!r}: {exc}", FrameCode.BAD_NAME) from exc
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise FrameError(f"path is longer than {MAX_PATH_BYTES} bytes", FrameCode.BAD_NAME)
    return path


def path_conflict(path: str, taken: set[str]) -> str | None:
    """The already taken path that ``path`` would collide with (same path, or file vs directory)."""
    if path in taken:
        return path
    parts = path.split("/")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        if parent in taken:
            return parent
    prefix = path + "/"
    return next((other for other in taken if other.startswith(prefix)), None)
