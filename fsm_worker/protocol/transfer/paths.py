"""Pure name checks: plain file names for inputs, safe relative paths for results."""

from __future__ import annotations

from fsm_worker.protocol.transfer.errors import ErrorCode, ProtocolError

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_PATH_DEPTH = 32


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


def check_relative_path(path: str) -> str:
    """Return ``path`` if it is a safe relative POSIX path: plain names joined by ``/``.

    Refused: empty, absolute, ``\\``, empty / ``.`` / ``..`` components, NUL or control characters,
    components over 255 bytes, more than 32 levels or more than 4096 bytes in total.
    """
    if path.startswith("/"):
        raise ProtocolError(f"path {path!r} is absolute", ErrorCode.BAD_NAME)
    parts = path.split("/")
    if len(parts) > MAX_PATH_DEPTH:
        raise ProtocolError(f"path {path!r} is deeper than {MAX_PATH_DEPTH} levels", ErrorCode.BAD_NAME)
    for part in parts:
        try:
            check_name(part)
        except ProtocolError as exc:
            raise ProtocolError(f"path {path!r}: {exc}", ErrorCode.BAD_NAME) from exc
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise ProtocolError(f"path is longer than {MAX_PATH_BYTES} bytes", ErrorCode.BAD_NAME)
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
