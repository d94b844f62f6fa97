"""Job side of the progress channel: write JSON lines to stdout (see ``docs/job-progress.md``)."""

from __future__ import annotations

import json
import sys
from typing import Any


def _write(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n")
    sys.stdout.flush()


def report_progress(progress: float, message: str = "", metrics: dict[str, Any] | None = None) -> None:
    """Report overall progress in [0, 1] (the runner clamps it into the open interval)."""
    _write({"event": "progress", "progress": progress, "message": message, "metrics": metrics or {}})


def report_result(model_file: str | None = None, metrics: dict[str, Any] | None = None) -> None:
    """Name the model file (relative to the outputs dir) and the final metrics; send once, before exit."""
    _write({"event": "result", "model_file": model_file, "metrics": metrics or {}})


def report_error(code: str, message: str, recoverable: bool | None = None) -> None:
    """Classify a failure before exiting non-zero: ``code`` (``[A-Z][A-Z0-9_]*``) and ``recoverable`` pass
    through to ``job_failed`` (``INPUT_INVALID`` is never recoverable)."""
    line: dict[str, Any] = {"event": "error", "code": code, "message": message}
    if recoverable is not None:
        line["recoverable"] = recoverable
    _write(line)
