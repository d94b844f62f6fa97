"""Where a download lands: a fresh staging folder, published without replacing anything.

A file already in place with the same size and sha256 counts as done (a repeat download is free);
different content is refused with ``EXISTS``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from fsm_worker.protocol.transfer.errors import FrameCode, FrameError, TransferError
from fsm_worker.protocol.transfer.paths import check_name, check_relative_path
from fsm_worker.shells.transfer.files import sha256_of


def prepare(dest_dir: Path, job_id: str | None) -> tuple[Path, Path]:
    """``(final, staging)``: ``final`` is ``dest_dir/<job_id>`` (a real folder if it exists) or ``dest_dir``.

    ``staging`` is a new hidden folder in ``dest_dir`` that the download writes into (blocking; use a thread).
    """
    if job_id is not None:
        check_name(job_id)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / job_id if job_id is not None else dest_dir
    if job_id is not None and os.path.lexists(final) and (final.is_symlink() or not final.is_dir()):
        raise TransferError(FrameCode.EXISTS, f"{final} exists and is not a folder; nothing is replaced")
    staging = dest_dir / f".{job_id or 'results'}.download-{secrets.token_hex(6)}"
    staging.mkdir()  # mode 0777 under the umask, like any folder the user creates
    return final, staging


def held(folder: Path, max_files: int) -> dict[str, tuple[int, str]]:
    """``name -> (size, sha256)`` of up to ``max_files`` regular files under ``folder`` (no links followed).

    What the client offers as ``fetch_results.have`` (blocking: it hashes; use a thread).
    """
    found: dict[str, tuple[int, str]] = {}
    if folder.is_symlink() or not folder.is_dir():
        return found
    for root, dirs, files in os.walk(folder):  # os.walk does not follow links to folders
        dirs.sort()
        for file in sorted(files):
            path = Path(root) / file
            if len(found) >= max_files or path.is_symlink() or not path.is_file():
                continue
            name = path.relative_to(folder).as_posix()
            found[name] = (path.stat().st_size, sha256_of(path).hexdigest())
    return found


def held_named(folder: Path, names: Iterable[str], max_files: int) -> dict[str, tuple[int, str]]:
    """``name -> (size, sha256)`` of the regular files among ``names`` under ``folder`` (blocking: it hashes).

    For a download into a shared folder: only the names of results this client received before are looked
    at and offered, never the folder's other files (their names and hashes stay with the client).
    """
    found: dict[str, tuple[int, str]] = {}
    for name in names:
        if len(found) >= max_files:
            break
        try:
            check_relative_path(name)
        except FrameError:
            continue
        path = folder.joinpath(*name.split("/"))
        if any(_is_link(parent) for parent in _parents_within(folder, path)):
            continue  # a result's folder replaced by a link: nothing outside `folder` is read
        if _regular(path):
            found[name] = (path.stat().st_size, sha256_of(path).hexdigest())
    return found


def publish(
    staging: Path, final: Path, names: tuple[str, ...], *, per_job: bool, kept: tuple[str, ...] = ()
) -> list[Path]:
    """Move the verified files from ``staging`` to ``final``; nothing existing is replaced (blocking).

    ``kept`` are results already in place (the worker answered ``same``). A sent file whose target
    already holds the same bytes counts as done; any other existing target is refused with ``EXISTS``.
    """
    targets = [final.joinpath(*name.split("/")) for name in names]
    if per_job and not os.path.lexists(final):
        try:
            os.rename(staging, final)  # atomic; fails when ``final`` appeared meanwhile
        except OSError as exc:
            raise TransferError(FrameCode.EXISTS, f"could not publish into {final}: {exc}") from exc
        return targets
    skip = set(kept)
    new: list[tuple[Path, Path]] = []
    taken: list[str] = []
    for name, target in zip(names, targets, strict=True):
        source = staging.joinpath(*name.split("/"))
        if name in skip:
            if not _regular(target):
                taken.append(f"{target} (changed meanwhile)")
        elif not os.path.lexists(target):
            new.append((source, target))
        elif not _same_file(source, target):
            taken.append(str(target))
    if taken:
        raise TransferError(FrameCode.EXISTS, f"refusing to replace existing files: {', '.join(taken[:5])}")
    for source, target in new:
        _real_parents(final, target)
        os.link(source, target)  # never replaces
    shutil.rmtree(staging, ignore_errors=True)
    return targets


def _is_link(path: Path) -> bool:
    return path.is_symlink()


def _parents_within(folder: Path, path: Path) -> list[Path]:
    return [folder, *(parent for parent in path.parents if parent != folder and folder in parent.parents)]


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _same_file(source: Path, target: Path) -> bool:
    """Whether ``target`` is a regular file (not a link) with exactly the bytes of ``source``."""
    if not _regular(target) or target.lstat().st_size != source.stat().st_size:
        return False
    return sha256_of(target).digest() == sha256_of(source).digest()


def _real_parents(root: Path, target: Path) -> None:
    """Create the folders between ``root`` and ``target``, refusing any that is a link or a file."""
    current = root
    for part in target.relative_to(root).parts[:-1]:
        current = current / part
        try:
            mode = current.lstat().st_mode
        except FileNotFoundError:
            current.mkdir()
            continue
        if not stat.S_ISDIR(mode):
            raise TransferError(FrameCode.EXISTS, f"{current} exists and is not a folder")


def discard(staging: Path) -> None:
    """Remove a staging folder and whatever it holds (blocking)."""
    shutil.rmtree(staging, ignore_errors=True)
