"""The limits and field checks (attrs validators) of the application messages; a failed check raises
`MessageError` naming the field. `schema.py` maps each check to its JSON-schema constraint."""

from __future__ import annotations

from typing import Any

import attrs

from fsm_worker.protocol.errors import MessageError

MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 64 * 1024


def identifier(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise MessageError(attribute.name, f"must be 1-{MAX_ID_LENGTH} printable characters")


def bounded_text(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if len(value) > MAX_TEXT_LENGTH:
        raise MessageError(attribute.name, f"longer than {MAX_TEXT_LENGTH} characters")


def non_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise MessageError(attribute.name, "must not be negative")


def positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise MessageError(attribute.name, "must be at least 1")


def opt_positive(instance: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None:
        positive(instance, attribute, value)  # type: ignore[arg-type]


def opt_non_negative(instance: object, attribute: attrs.Attribute[float | None], value: float | None) -> None:
    if value is not None:
        non_negative(instance, attribute, value)


def fraction(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise MessageError(attribute.name, "must be between 0 and 1")


def sha256_hex(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value)):
        raise MessageError(attribute.name, "must be 64 lowercase hex digits (a sha256)")


def job_key(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and not 16 <= len(value) <= MAX_ID_LENGTH:
        raise MessageError(attribute.name, f"must be 16-{MAX_ID_LENGTH} characters")


MAX_METRIC_FIELDS = 32


def metric_extra(
    instance: object, attribute: attrs.Attribute[dict[str, float]], value: dict[str, float]
) -> None:
    if len(value) > MAX_METRIC_FIELDS:
        raise MessageError(attribute.name, f"more than {MAX_METRIC_FIELDS} entries")
    for key, number in value.items():
        if not key or len(key) > 64 or not isinstance(number, int | float) or isinstance(number, bool):
            raise MessageError(attribute.name, "names must be 1-64 characters and values numbers")
