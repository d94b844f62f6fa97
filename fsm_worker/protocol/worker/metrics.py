"""The numbers a job reports, as the wire's typed `Metrics` (pure): epoch, step, loss, val_loss, ..."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fsm_worker.protocol.messages import MAX_METRIC_FIELDS, Metrics

#: Names jobs and tools use for the typed fields (Lightning and sleap-nn spell validation loss ``val/loss``).
ALIASES: dict[str, str] = {
    "epoch": "epoch",
    "step": "step",
    "global_step": "step",
    "loss": "loss",
    "train_loss": "loss",
    "train/loss": "loss",
    "val_loss": "val_loss",
    "val/loss": "val_loss",
    "learning_rate": "learning_rate",
    "lr": "learning_rate",
    "train/lr": "learning_rate",
    "eta_seconds": "eta_seconds",
}
INTEGER_FIELDS = frozenset({"epoch", "step"})
MAX_EXTRA_KEY_CHARS = 64


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def wire_metrics(values: Mapping[str, Any]) -> Metrics | None:
    """Typed metrics from a job's dict: known names fill the fields, other finite numbers go to ``extra``.

    Strings, booleans and non-finite numbers are dropped; ``None`` when nothing is left.
    """
    typed: dict[str, float | int] = {}
    extra: dict[str, float] = {}
    for key, value in values.items():
        number = _finite(value)
        if number is None:
            continue
        field = ALIASES.get(key)
        if field is not None:
            if field not in typed:
                typed[field] = int(number) if field in INTEGER_FIELDS else number
        elif key and len(key) <= MAX_EXTRA_KEY_CHARS and len(extra) < MAX_METRIC_FIELDS:
            extra[key] = number
    if not typed and not extra:
        return None
    return Metrics(extra=extra, **typed)  # type: ignore[arg-type]
