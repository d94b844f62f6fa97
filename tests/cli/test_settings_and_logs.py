"""Configuration precedence (flags, then FSM_WORKER_* variables, then TOML) and the two log formats."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsm_worker import logs
from fsm_worker.settings import Settings, SettingsError, as_bool, as_list, load_toml, optional
from fsm_worker.worker import WorkerConfig, WorkerHost


def settings(tmp_path: Path, toml: str, command: str = "worker", **flags: object) -> Settings:
    path = tmp_path / "fsm.toml"
    path.write_text(toml)
    return Settings(argparse.Namespace(**flags), load_toml(path, command))


def test_flags_beat_environment_beat_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = 'reservation_timeout = 5\nretention = 7\njob_types = ["a", "b"]\n[worker]\nretention = 9\n'
    monkeypatch.setenv("FSM_WORKER_RESERVATION_TIMEOUT", "6")
    got = settings(tmp_path, toml, reservation_timeout=None, retention=None, job_types=None)
    assert got.get("reservation_timeout", 30.0, float) == 6.0  # the variable beats the file
    assert got.get("retention", 3600.0, float) == 9.0  # the command's table beats the top level
    assert got.get_list("job_types") == ["a", "b"]
    assert got.get("input_timeout", 1800.0, float) == 1800.0  # nowhere: the default
    flagged = settings(tmp_path, toml, reservation_timeout=4.0)
    assert flagged.get("reservation_timeout", 30.0, float) == 4.0  # the flag beats everything


def test_bad_values_name_their_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSM_WORKER_RETENTION", "forever")
    with pytest.raises(SettingsError, match="FSM_WORKER_RETENTION"):
        settings(tmp_path, "").get("retention", 3600.0, float)
    with pytest.raises(SettingsError, match=r"broken\.toml"):
        path = tmp_path / "broken.toml"
        path.write_text("retention = [")
        load_toml(path, "worker")


def test_value_helpers() -> None:
    assert as_list("a, b,,c") == ["a", "b", "c"] and as_list(["x", 1]) == ["x", "1"]
    assert as_bool("yes") is True and as_bool("0") is False
    with pytest.raises(ValueError):
        as_bool("maybe")
    assert optional(int)("none") is None and optional(int)("3") == 3


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in logs.NOISY}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, noisy_level in noisy.items():
        logging.getLogger(name).setLevel(noisy_level)


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_are_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", json_logs=True)
    logging.getLogger("fsm_worker.test").info("hello %s", "world")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    entry = json.loads(line)
    assert entry.pop("time") and entry == {
        "level": "INFO",
        "logger": "fsm_worker.test",
        "message": "hello world",
    }
    logs.configure("WARNING")
    assert logging.getLogger("transitions").level == logging.WARNING


def test_a_worker_refuses_job_types_it_does_not_have(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="render are not configured"):
        WorkerHost(
            WorkerConfig("http://127.0.0.1:1", "t", "w", workdir=tmp_path, job_types=("train-demo", "render"))
        )
