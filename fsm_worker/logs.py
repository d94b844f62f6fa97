"""Logging for the CLI: readable `key=value` lines by default, or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from fsm_worker.logfmt import STRUCTURED, log_event
from fsm_worker.protocol.worker import events as run_events

#: Libraries that are chatty below WARNING (ICE checks, every transition); raised unless --log-level DEBUG.
NOISY = ("transitions", "aioice", "aiortc", "engineio", "socketio", "aiohttp.access")

_RESERVED = ("time", "level", "logger", "message", "event", "exception")


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a structured event (`log_event`) gives `event` and its fields as keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
        }
        structured = getattr(record, STRUCTURED, None)
        if structured is not None:
            event, fields = structured
            entry["event"] = event
            entry["message"] = event
            for key, value in fields.items():
                if value is not None:
                    entry[f"field_{key}" if key in _RESERVED else key] = _json_value(value)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(level: str = "INFO", json_logs: bool = False) -> None:
    """Send logs to stderr at `level`, formatted as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric if isinstance(numeric, int) else logging.INFO)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)


_outcomes = logging.getLogger("fsm_worker.worker.jobs")


def job_outcome(event: run_events.RunEvent) -> None:
    """The worker's one log line per finished run (the host calls this where the runner reports it)."""
    match event:
        case run_events.RunSucceeded():
            log_event(_outcomes, logging.INFO, "job_completed", job_id=event.job_id,
                      minutes=round(event.training_duration_minutes, 3), model_size_mb=event.model_size_mb)  # fmt: skip
        case run_events.RunFailed():
            log_event(_outcomes, logging.WARNING, "job_failed", job_id=event.job_id, code=str(event.code),
                      recoverable=event.recoverable, message=event.message[-300:])  # fmt: skip
        case run_events.RunStopped():
            log_event(_outcomes, logging.INFO, "job_stopped", job_id=event.job_id)
