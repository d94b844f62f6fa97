"""What submit keeps for attach/cancel, and `--job-types-from`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fsm_worker import job_state
from fsm_worker.cli import load_registry
from fsm_worker.job_state import JobRecord
from fsm_worker.jobs.registry import JobTypeRegistry
from fsm_worker.settings import SettingsError

REGISTRY = JobTypeRegistry()


def test_records_are_private_and_the_latest_is_the_default(tmp_path: Path) -> None:
    first = JobRecord("job-1", "w1", "client-a", "http://127.0.0.1:1", "s" * 64, None, "train-demo")
    second = JobRecord("job/2", "w2", "client-b", "http://127.0.0.1:1", None, "key", "train-demo")
    path = job_state.save(tmp_path, first)
    os.utime(path, (1, 1))
    job_state.save(tmp_path, second)
    assert path.stat().st_mode & 0o777 == 0o600 and (tmp_path / "jobs").stat().st_mode & 0o777 == 0o700
    assert job_state.load(tmp_path, None) == second
    assert job_state.load(tmp_path, "job-1") == first
    job_state.forget(tmp_path, "job/2")
    assert job_state.load(tmp_path, None) == first
    with pytest.raises(SettingsError, match="not submitted from this machine"):
        job_state.load(tmp_path, "job-3")
    path.write_text("{not json")
    with pytest.raises(SettingsError, match="unreadable job record"):
        job_state.load(tmp_path, "job-1")


def test_no_record_at_all_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"no job to follow in .*: pass --job-id"):
        job_state.load(tmp_path, None)


def test_job_types_from_a_module_object_or_callable() -> None:
    assert load_registry(f"{__name__}:REGISTRY") is REGISTRY
    loaded = load_registry("fsm_worker.examples.word_count:registry")
    assert "word-count" in loaded and "train-demo" in loaded
    for spec, message in [
        ("no_colon", "expected MODULE:OBJECT"),
        ("fsm_worker.nope:x", "No module named"),
        ("fsm_worker.examples.word_count:missing", "has no attribute 'missing'"),
        ("fsm_worker.examples.word_count:WordCount", "not a JobTypeRegistry"),
    ]:
        with pytest.raises(SettingsError, match=message):
            load_registry(spec)
