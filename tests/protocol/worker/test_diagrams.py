"""The committed diagrams are generated from the transition table: this fails when they are stale."""

from __future__ import annotations

from pathlib import Path

from fsm_worker import diagrams


def test_committed_diagrams_match_the_machine() -> None:
    for name, text in diagrams.expected_files().items():
        committed = diagrams.DEFAULT_DIR / name
        assert committed.exists(), f"{committed} is missing: run `python -m fsm_worker.diagrams`"
        assert committed.read_text(encoding="utf-8") == text, (
            f"{name} is stale: run `python -m fsm_worker.diagrams`"
        )


def test_diagram_shows_every_status_change(tmp_path: Path) -> None:
    written = diagrams.write(tmp_path)
    mermaid = (tmp_path / "worker-states.mmd").read_text()
    assert tmp_path / "transitions.md" in written
    for edge in (
        "available --> reserved: job_request",
        "reserved --> busy__awaiting_inputs: job_assignment",
        "reserved --> available",
        "busy__running --> busy__stopping__early: job_stop",
    ):
        assert edge in mermaid
    assert "state busy {" in mermaid and "state busy__stopping {" in mermaid  # the sub-states nest
