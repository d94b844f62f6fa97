"""JSON logs carry the event's fields as keys; the progress line shows the metrics an event carries."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from rich.console import Console

from fsm_worker import logs
from fsm_worker.jobs.spec import ErrorCode
from fsm_worker.logfmt import log_event
from fsm_worker.progress import JobProgress, format_metrics
from fsm_worker.protocol.messages import JobStatus, Metrics
from fsm_worker.protocol.worker import events as run_events


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_a_structured_event_is_real_json_fields(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", json_logs=True)
    log_event(logging.getLogger("fsm_worker.t"), logging.WARNING, "send_queued", peer_id="w 1", queued=3,
              time="x", skipped=None)  # fmt: skip
    entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert entry.pop("time")
    assert entry == {
        "level": "WARNING",
        "logger": "fsm_worker.t",
        "event": "send_queued",
        "message": "send_queued",
        "peer_id": "w 1",
        "queued": 3,
        "field_time": "x",  # a field never overwrites the record's own keys
    }


@pytest.mark.usefixtures("restore_logging")
def test_text_logs_keep_the_key_value_line(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO")
    log_event(logging.getLogger("fsm_worker.t"), logging.INFO, "connected", peer_id="w1", queued=0)
    assert capsys.readouterr().err.strip().endswith("fsm_worker.t: event=connected peer_id=w1 queued=0")


@pytest.mark.usefixtures("restore_logging")
def test_the_worker_logs_each_runs_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", json_logs=True)
    logs.job_outcome(run_events.RunSucceeded("j1", 0.5, 1.25))
    logs.job_outcome(run_events.RunFailed("j2", ErrorCode.EXIT_NONZERO, "boom", False))
    logs.job_outcome(run_events.RunStopped("j3"))
    logs.job_outcome(run_events.RunStarted("j4"))  # not an outcome: no line
    lines = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
    assert [(e["event"], e["job_id"]) for e in lines] == [
        ("job_completed", "j1"), ("job_failed", "j2"), ("job_stopped", "j3"),
    ]  # fmt: skip
    assert lines[1]["code"] == "EXIT_NONZERO" and lines[1]["recoverable"] is False
    assert lines[0]["model_size_mb"] == 1.25


def test_metrics_on_the_progress_line() -> None:
    assert format_metrics(None) == "" and format_metrics(Metrics()) == ""
    assert (
        format_metrics(Metrics(epoch=3, loss=0.123456, val_loss=0.25)) == "epoch 3 loss 0.1235 val_loss 0.25"
    )
    console = Console(record=True, width=140)
    with JobProgress(console) as progress:
        progress.event(JobStatus("j1", "running", 0.5, "training", metrics=Metrics(epoch=2, loss=0.5)))
    assert "epoch 2 loss 0.5 training" in console.export_text()
