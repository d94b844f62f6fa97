"""Discovery filters: parsing untrusted filter objects and matching peers against them (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from fsm_worker.protocol.errors import SignalingCode, SignalingRefusal
from fsm_worker.protocol.signaling import ROLES, check_json, single_arg

OPERATORS = frozenset({"$gte", "$lte", "$eq"})


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@attrs.frozen
class Filters:
    """What ``discover_peers`` asks for; an empty filter matches every peer."""

    role: str | None = None
    tags: tuple[str, ...] | None = None
    properties: Mapping[str, Any] = attrs.field(factory=dict)

    def matches(self, role: str, metadata: Mapping[str, Any]) -> bool:
        """True if a peer with this role and metadata passes every condition."""
        if self.role is not None and role != self.role:
            return False
        if self.tags is not None:
            have = metadata.get("tags")
            if not isinstance(have, list) or not set(self.tags).intersection(
                t for t in have if isinstance(t, str)
            ):
                return False
        if self.properties:
            props = metadata.get("properties")
            if not isinstance(props, dict):
                return False
            return all(key in props and _condition(cond, props[key]) for key, cond in self.properties.items())
        return True


def _is_operator_dict(cond: object) -> bool:
    return isinstance(cond, dict) and bool(cond) and all(str(k).startswith("$") for k in cond)


def _equal(expected: object, value: object) -> bool:
    if _number(expected) and _number(value):
        return expected == value
    return type(expected) is type(value) and expected == value


def _compare(op: str, operand: Any, value: Any) -> bool:
    if op == "$eq":
        return _equal(operand, value)
    if not _number(value):
        return False
    return bool(value >= operand if op == "$gte" else value <= operand)


def _condition(cond: object, value: object) -> bool:
    if isinstance(cond, dict) and _is_operator_dict(cond):
        return all(_compare(str(op), operand, value) for op, operand in cond.items())
    return _equal(cond, value)


def parse_filters(args: tuple[Any, ...], *, max_bytes: int) -> Filters:
    """Validate ``discover_peers`` ``{"filters": {"role"?, "tags"?, "properties"?}}`` (``filters`` optional)."""
    data = single_arg(args, "discover_peers")
    raw = data.get("filters", {})
    code = SignalingCode.INVALID_FILTER
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SignalingRefusal(code, "filters must be a JSON object")
    check_json(raw, what="filters", max_bytes=max_bytes, code=code)
    unknown = set(raw) - {"role", "tags", "properties"}
    if unknown:
        raise SignalingRefusal(code, f"unknown filter fields: {', '.join(sorted(unknown))}")
    role = raw.get("role")
    if role is not None and role not in ROLES:
        raise SignalingRefusal(code, "filters.role must be 'worker' or 'client'")
    tags = raw.get("tags")
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
        raise SignalingRefusal(code, "filters.tags must be a list of strings")
    props = raw.get("properties")
    props = {} if props is None else props
    if not isinstance(props, dict):
        raise SignalingRefusal(code, "filters.properties must be a JSON object")
    for key, cond in props.items():
        if not _is_operator_dict(cond):
            continue
        for op, operand in cond.items():
            if op not in OPERATORS:
                raise SignalingRefusal(code, f"filters.properties.{key}: unknown operator {op!r}")
            if op != "$eq" and not _number(operand):
                raise SignalingRefusal(code, f"filters.properties.{key}: {op} needs a number")
    return Filters(role=role, tags=None if tags is None else tuple(tags), properties=props)
