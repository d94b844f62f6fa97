"""The numbers a job reports, as the wire's typed `Metrics` (pure)."""

from __future__ import annotations

from typing import Any

import attrs

from fsm_worker.protocol.messages import MAX_METRIC_FIELDS, Metrics


def wire_metrics(reported: dict[str, Any]) -> Metrics | None:
    """The numbers a job reported that fit the wire's `Metrics` (known names typed, other numbers in `extra`);
    None when there are none. Values that do not fit are dropped, never an error."""
    known: dict[str, Any] = {}
    extra: dict[str, float] = {}
    for name, value in reported.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if name in _METRIC_FIELDS:
            if name in ("epoch", "step"):
                if isinstance(value, int) or float(value).is_integer():
                    known[name] = int(value)
            else:
                known[name] = float(value)
        elif 0 < len(name) <= 64 and len(extra) < MAX_METRIC_FIELDS:
            extra[name] = float(value)
    return Metrics(**known, extra=extra) if known or extra else None


_METRIC_FIELDS = frozenset(field.name for field in attrs.fields(Metrics)) - {"extra"}
