"""`fsm-worker doctor` as a real subprocess: a healthy workdir and journal, then a corrupt journal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fsm_worker.worker.journal import Journal


def doctor(workdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "fsm_worker.cli", "doctor", "--workdir", str(workdir), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_doctor_passes_a_healthy_workdir_and_journal(tmp_path: Path) -> None:
    Journal(tmp_path / "journal.sqlite", {"core": {}}).close()
    done = doctor(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "integrity ok, format current" in done.stdout


def test_doctor_names_a_corrupt_journal_and_too_little_space(tmp_path: Path) -> None:
    (tmp_path / "journal.sqlite").write_bytes(b"not a database" * 200)
    done = doctor(tmp_path, "--min-free-mb", str(1 << 40))
    assert done.returncode == 1
    assert "journal" in done.stdout and "cannot be read" in done.stdout
    assert "below min_free_mb" in done.stdout
