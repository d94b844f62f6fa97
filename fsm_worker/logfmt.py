"""Structured, readable ``key=value`` logging on top of stdlib :mod:`logging`."""

from __future__ import annotations

import logging
import re

_BARE = re.compile(r"[A-Za-z0-9_.:/@+\-]+")


def _fmt(value: object) -> str:
    text = str(value)
    if _BARE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def kv(event: str, **fields: object) -> str:
    """``event=NAME k=v ...`` with values quoted only when needed; ``None`` fields are left out."""
    parts = [f"event={_fmt(event)}"]
    parts.extend(f"{key}={_fmt(value)}" for key, value in fields.items() if value is not None)
    return " ".join(parts)


def log_event(logger: logging.Logger, level: int, event: str, **fields: object) -> None:
    """Log one structured event (formatting is skipped when the level is disabled)."""
    if logger.isEnabledFor(level):
        # The text line keeps `event=... k=v`; the JSON formatter (`fsm_worker.logs`) uses the fields themselves.
        logger.log(level, "%s", kv(event, **fields), extra={STRUCTURED: (event, fields)})


#: The `LogRecord` attribute carrying `(event, fields)` of a structured event.
STRUCTURED = "fsm_event"


def configure_logging(level: int | str = logging.INFO) -> None:
    """Root handler printing ``time level logger event=... k=v`` lines (for CLIs and server processes)."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
