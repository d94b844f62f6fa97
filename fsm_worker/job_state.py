"""What `fsm-worker submit` keeps so that `attach` and `cancel` can reach the job from another process.

One JSON file per job in the state directory, private to the user (it holds the client's resume secret and the
job key): the job id, the worker, the client's peer id and resume secret, the job key when the client has one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs

from fsm_worker.settings import SettingsError


@attrs.frozen
class JobRecord:
    """Everything needed to follow or cancel a job submitted by another `fsm-worker` process."""

    job_id: str
    worker_id: str
    client_id: str
    server: str
    resume_secret: str | None = None
    job_key: str | None = None
    job_type: str = ""


def _jobs_dir(state_dir: Path) -> Path:
    return state_dir / "jobs"


def _file(state_dir: Path, job_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id)
    return _jobs_dir(state_dir) / f"{safe}.json"


def save(state_dir: Path, record: JobRecord) -> Path:
    """Write the record (mode 0600 in a 0700 directory); returns its path."""
    folder = _jobs_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = _file(state_dir, record.job_id)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(attrs.asdict(record), out)
    tmp.replace(path)
    return path


def load(state_dir: Path, job_id: str | None) -> JobRecord:
    """The record of `job_id`, or of the latest job submitted when it is None; SettingsError if none."""
    if job_id is None:
        candidates = sorted(_jobs_dir(state_dir).glob("*.json"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise SettingsError(f"no job to follow in {_jobs_dir(state_dir)}: pass --job-id")
        path = candidates[-1]
    else:
        path = _file(state_dir, job_id)
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return JobRecord(**data)
    except FileNotFoundError:
        raise SettingsError(f"job {job_id}: not submitted from this machine (no {path})") from None
    except (OSError, ValueError, TypeError) as error:
        raise SettingsError(f"{path}: unreadable job record: {error}") from None


def forget(state_dir: Path, job_id: str) -> None:
    """Remove the record of a job that has ended."""
    _file(state_dir, job_id).unlink(missing_ok=True)
