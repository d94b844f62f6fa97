"""Runner side of the progress channel: parse JSON lines from a job's stdout, rate-limit progress.

The line format is documented in ``docs/job-progress.md``; ``fsm_worker.jobs.report`` writes it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Generic, TypeVar

import attrs

MAX_MESSAGE_CHARS = 500
MAX_METRICS = 32
MAX_KEY_CHARS = 64
ERROR_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")

T = TypeVar("T")


@attrs.frozen
class ProgressLine:
    progress: float
    message: str = ""
    metrics: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ResultLine:
    model_file: str | None = None
    metrics: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ErrorLine:
    """A job-type error code (``[A-Z][A-Z0-9_]*``, at most 64 characters) passed through with ``recoverable``."""

    code: str
    message: str = ""
    recoverable: bool | None = None


ParsedLine = ProgressLine | ResultLine | ErrorLine


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _text(value: object) -> str | None:
    if value is None:
        return ""
    return value[:MAX_MESSAGE_CHARS] if isinstance(value, str) else None


def _metrics(value: object) -> dict[str, Any] | None:
    """Keep at most ``MAX_METRICS`` scalar entries with short string keys; ``None`` if malformed."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        return None
    out: dict[str, Any] = {}
    for key, item in list(value.items())[:MAX_METRICS]:
        if not isinstance(key, str) or len(key) > MAX_KEY_CHARS:
            return None
        if isinstance(item, str):
            out[key] = item[:MAX_KEY_CHARS]
        elif item is None or isinstance(item, bool) or _number(item) is not None:
            out[key] = item
        else:
            return None
    return out


def parse_line(raw: bytes | str) -> ParsedLine | None:
    """Parse one stdout line; ``None`` means "not a progress-channel line" (the caller just logs it)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    event = obj.get("event")
    message = _text(obj.get("message"))
    metrics = _metrics(obj.get("metrics"))
    if message is None or metrics is None:
        return None
    if event == "progress":
        progress = _number(obj.get("progress"))
        return None if progress is None else ProgressLine(progress, message, metrics)
    if event == "result":
        model_file = obj.get("model_file")
        if model_file is not None and not isinstance(model_file, str):
            return None
        return ResultLine(model_file, metrics)
    if event == "error":
        code, recoverable = obj.get("code"), obj.get("recoverable")
        if not isinstance(code, str) or not ERROR_CODE.fullmatch(code):
            return None
        if recoverable is not None and not isinstance(recoverable, bool):
            return None
        return ErrorLine(code, message, recoverable)
    return None


@attrs.define
class RateLimiter(Generic[T]):
    """At most one item per ``interval`` (time is passed in as ``now``); the latest item is never lost.

    ``offer`` returns the item to deliver now, or keeps it pending (replacing an older pending one).
    A pending item becomes deliverable at ``deadline``: the caller polls ``due(now)`` then, and calls
    ``flush()`` when the stream ends. The first item is always delivered at once. Items must not be None.
    """

    interval: float
    _last_sent: float | None = attrs.field(default=None, init=False)
    _pending: T | None = attrs.field(default=None, init=False)

    def offer(self, item: T, now: float) -> T | None:
        if self._last_sent is None or now - self._last_sent >= self.interval:
            self._last_sent = now
            self._pending = None
            return item
        self._pending = item
        return None

    @property
    def deadline(self) -> float | None:
        """When the pending item may be delivered, or ``None`` if nothing is pending."""
        if self._pending is None or self._last_sent is None:
            return None
        return self._last_sent + self.interval

    def due(self, now: float) -> T | None:
        deadline = self.deadline
        if deadline is None or now < deadline:
            return None
        item, self._pending = self._pending, None
        self._last_sent = now
        return item

    def flush(self) -> T | None:
        """End of stream: hand over the pending item regardless of the interval."""
        item, self._pending = self._pending, None
        return item
