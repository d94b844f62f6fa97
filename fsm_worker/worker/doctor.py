"""`fsm-worker doctor`: is this machine's worker state usable? The journal and the work directory, checked."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fsm_worker.worker.journal import check_journal

__all__ = ["JOURNAL_FILE", "diagnose"]

JOURNAL_FILE = "journal.sqlite"


def _check_workdir(workdir: Path, min_free_mb: int) -> list[str]:
    if not workdir.exists():
        return [f"workdir {workdir}: does not exist (the worker creates it; is its parent writable?)"]
    problems: list[str] = []
    try:
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".doctor-"):
            pass
    except OSError as exc:
        problems.append(f"workdir {workdir}: not writable: {exc.strerror or exc}")
    free_mb = shutil.disk_usage(workdir).free // (1024 * 1024)
    if free_mb < min_free_mb:
        problems.append(f"workdir {workdir}: {free_mb} MiB free, below min_free_mb={min_free_mb}")
    return problems


def diagnose(workdir: Path, min_free_mb: int = 1024) -> tuple[list[str], list[str]]:
    """(what is fine, what is wrong) about `workdir` and the journal in it."""
    journal = workdir / JOURNAL_FILE
    problems = _check_workdir(workdir, min_free_mb) + check_journal(journal)
    fine = [] if problems else [f"workdir {workdir}: writable, enough free space"]
    if not problems:
        fine.append(
            f"journal {journal}: " + ("integrity ok, format current" if journal.exists() else "none yet")
        )
    return fine, problems
