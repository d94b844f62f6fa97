"""Where a download lands: a fresh staging folder, published without replacing anything."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from pathlib import Path

from fsm_worker.protocol.transfer.errors import FrameCode, TransferError
from fsm_worker.protocol.transfer.paths import check_name


def prepare(dest_dir: Path, job_id: str | None) -> tuple[Path, Path]:
    """``(final, staging)``: ``final`` is ``dest_dir/<job_id>`` (must not exist or be empty) or ``dest_dir``.

    ``staging`` is a new hidden folder in ``dest_dir`` that the download writes into (blocking; use a thread).
    """
    if job_id is not None:
        check_name(job_id)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / job_id if job_id is not None else dest_dir
    if job_id is not None and _occupied(final):
        raise TransferError(
            FrameCode.EXISTS, f"{final} already exists; results are never merged or overwritten"
        )
    staging = dest_dir / f".{job_id or 'results'}.download-{secrets.token_hex(6)}"
    staging.mkdir()  # mode 0777 under the umask, like any folder the user creates
    return final, staging


def _occupied(folder: Path) -> bool:
    if not os.path.lexists(folder):
        return False
    return folder.is_symlink() or not folder.is_dir() or any(folder.iterdir())


def publish(staging: Path, final: Path, names: tuple[str, ...], *, per_job: bool) -> list[Path]:
    """Move the verified files from ``staging`` to ``final``; nothing existing is replaced (blocking)."""
    if per_job:
        try:
            os.rename(staging, final)  # atomic; fails when ``final`` exists and is not an empty folder
        except OSError as exc:
            raise TransferError(FrameCode.EXISTS, f"could not publish into {final}: {exc}") from exc
        return [final.joinpath(*name.split("/")) for name in names]
    targets = [final.joinpath(*name.split("/")) for name in names]
    taken = [str(t) for t in targets if os.path.lexists(t)]
    if taken:
        raise TransferError(FrameCode.EXISTS, f"refusing to replace existing files: {', '.join(taken[:5])}")
    for name, target in zip(names, targets, strict=True):
        _real_parents(final, target)
        os.link(staging.joinpath(*name.split("/")), target)  # never replaces
    shutil.rmtree(staging, ignore_errors=True)
    return targets


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
