"""Small typed readers for client-sent job config; each error names the offending field."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from fsm_worker.jobs.spec import JobConfigError

MAX_NAME_CHARS = 255


def check_config_keys(config: Mapping[str, Any], allowed: Collection[str]) -> None:
    """Refuse a non-mapping config and any key outside ``allowed``."""
    if not isinstance(config, Mapping):
        raise JobConfigError("config", "must be an object")
    for key in config:
        if key not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise JobConfigError(str(key), f"unknown field (allowed: {names})")


def get_int(config: Mapping[str, Any], name: str, default: int | None, lo: int, hi: int) -> int | None:
    value = config.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobConfigError(name, f"must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise JobConfigError(name, f"must be between {lo} and {hi}, got {value}")
    return value


def get_float(config: Mapping[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = config.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JobConfigError(name, f"must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or not lo <= number <= hi:
        raise JobConfigError(name, f"must be between {lo} and {hi}, got {value!r}")
    return number


def get_name(config: Mapping[str, Any], name: str, default: str | None) -> str | None:
    """A short plain name (a column or a file name): no path separators, NUL or control characters."""
    value = config.get(name, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise JobConfigError(name, f"must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_NAME_CHARS:
        raise JobConfigError(name, f"must be 1..{MAX_NAME_CHARS} characters")
    if any(ch in value for ch in "/\\") or value in {".", ".."} or not value.isprintable():
        raise JobConfigError(name, "must be a plain name (no path separators or control characters)")
    return value


def get_bool(config: Mapping[str, Any], name: str, default: bool) -> bool:
    value = config.get(name, default)
    if not isinstance(value, bool):
        raise JobConfigError(name, f"must be true or false, got {type(value).__name__}")
    return value


def get_choice(config: Mapping[str, Any], name: str, default: str, choices: Collection[str]) -> str:
    value = config.get(name, default)
    if not isinstance(value, str) or value not in choices:
        raise JobConfigError(name, f"must be one of {', '.join(sorted(choices))}, got {value!r}")
    return value


def get_string(
    config: Mapping[str, Any], name: str, default: str | None, max_chars: int = 1000
) -> str | None:
    """Printable text of at most ``max_chars`` characters (never parsed as a path by the kit)."""
    value = config.get(name, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise JobConfigError(name, f"must be a string, got {type(value).__name__}")
    if len(value) > max_chars or not value.isprintable():
        raise JobConfigError(name, f"must be printable text of at most {max_chars} characters")
    return value
