"""JSON Schemas of the wire, generated from the attrs types that parse it (pure: types in, dicts out).

`message_schema(cls)` / `frame_schema(cls)` turn an application message or a data-channel frame class into
a JSON Schema (draft-07, as AsyncAPI uses): field types from the annotations, required fields from the
defaults, limits from the validators. `fsm_worker.protocol.asyncapi` assembles them, with the signaling
events of `fsm_worker.protocol.signaling_schema`, into docs/asyncapi.yaml.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

import attrs

import fsm_worker.shells.transfer  # noqa: F401  (first: frames ↔ shells.transfer import each other today)
from fsm_worker.protocol import messages
from fsm_worker.protocol.messages import checks
from fsm_worker.protocol.transfer import frames

Schema = dict[str, Any]
SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "64 lowercase hex digits"}


def _ref(cls: type) -> Schema:
    return {"$ref": f"#/components/schemas/{cls.__name__}"}


#: What each validator of the message and frame types allows, as JSON Schema keywords.
VALIDATORS: dict[Callable[..., Any], Schema] = {
    checks.identifier: {"minLength": 1, "maxLength": checks.MAX_ID_LENGTH},
    checks.bounded_text: {"maxLength": checks.MAX_TEXT_LENGTH},
    checks.non_negative: {"minimum": 0},
    checks.positive: {"minimum": 1},
    checks.opt_positive: {"minimum": 1},
    checks.opt_non_negative: {"minimum": 0},
    checks.fraction: {"minimum": 0, "maximum": 1},
    checks.sha256_hex: {"pattern": SHA256["pattern"]},
    checks.job_key: {"minLength": 16, "maxLength": checks.MAX_ID_LENGTH},
    checks.metric_extra: {
        "maxProperties": checks.MAX_METRIC_FIELDS,
        "propertyNames": {"minLength": 1, "maxLength": 64},
    },
    frames._sha256: {"pattern": SHA256["pattern"]},
    frames._opt_sha256: {"pattern": SHA256["pattern"]},
    frames._non_negative: {"minimum": 0},
}


def type_schema(kind: Any) -> Schema:
    """The schema of one annotated type (attrs classes become ``$ref``s to their own schema)."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if kind is str:
        return {"type": "string"}
    if kind is bool:
        return {"type": "boolean"}
    if kind is int:
        return {"type": "integer", "description": "written without a fraction: 1, not 1.0"}
    if kind is float:
        return {"type": "number"}
    if kind is Any:
        return {}
    if origin in (types.UnionType, typing.Union):
        options = [type_schema(arg) for arg in args if arg is not type(None)]
        schema = options[0] if len(options) == 1 else {"anyOf": options}
        return {"anyOf": [schema, {"type": "null"}]} if type(None) in args else schema
    if origin is dict:
        values = type_schema(args[1]) if args else {}
        return {"type": "object", **({"additionalProperties": values} if values else {})}
    if origin in (tuple, list):
        return {"type": "array", "items": type_schema(args[0])}
    if attrs.has(kind):
        return _ref(kind)
    raise TypeError(f"no JSON Schema for {kind!r}")


def _validator_keywords(field: attrs.Attribute[Any]) -> Schema:
    keywords: Schema = {}
    validator = field.validator
    found = getattr(validator, "_validators", None) or ([validator] if validator else [])
    for item in found:
        keywords.update(VALIDATORS.get(item, {}))
    return keywords


def _field_schema(field: attrs.Attribute[Any], kind: Any) -> Schema:
    schema = type_schema(kind)
    keywords = _validator_keywords(field)
    if not keywords:
        return schema
    if "anyOf" in schema and {"type": "null"} in schema["anyOf"]:  # limits apply to the non-null value
        inner = next(option for option in schema["anyOf"] if option != {"type": "null"})
        return {"anyOf": [{**inner, **keywords}, {"type": "null"}]}
    return {**schema, **keywords}


def object_schema(cls: type, *, closed: bool, description: str | None = None) -> Schema:
    """The schema of an attrs class: one property per field, required when it has no default."""
    hints = typing.get_type_hints(cls)
    properties: Schema = {}
    required: list[str] = []
    for field in attrs.fields(cls):
        properties[field.name] = _field_schema(field, hints[field.name])
        if field.default is attrs.NOTHING:
            required.append(field.name)
    schema: Schema = {"type": "object"}
    lines = (cls.__doc__ or "").strip().splitlines()
    doc = description or (lines[0] if lines and not lines[0].startswith(f"{cls.__name__}(") else None)
    if doc:
        schema["description"] = doc
    schema["properties"] = properties
    if required:
        schema["required"] = required
    schema["additionalProperties"] = not closed
    return schema


def message_schema(cls: type[messages.Message]) -> Schema:
    """An application message: ``app_message_type`` and the fixed fields first, unknown fields allowed."""
    body = object_schema(cls, closed=False)
    fixed = {key: {"const": value} for key, value in cls.CONSTANTS.items()}
    body["properties"] = {"app_message_type": {"const": cls.TYPE}, **fixed, **body["properties"]}
    body["required"] = ["app_message_type", *body.get("required", [])]
    for name in cls.KEEP_NULL:
        body["properties"][name]["description"] = "always sent (null when none); optional to receivers"
    return body


def frame_schema(cls: type[frames.Frame]) -> Schema:
    """A data-channel control frame: ``type`` first; unknown fields are refused (``BAD_FRAME``)."""
    body = object_schema(cls, closed=True)
    body["properties"] = {"type": {"const": cls.TYPE}, **body["properties"]}
    body["required"] = ["type", *body.get("required", [])]
    return body


def nested_types(roots: typing.Iterable[type]) -> list[type]:
    """Every attrs class reachable from ``roots`` through field annotations (roots excluded), in order."""
    seen: list[type] = []

    def walk(kind: Any) -> None:
        for arg in typing.get_args(kind):
            walk(arg)
        if attrs.has(kind) and kind not in seen:
            seen.append(kind)
            for hint in typing.get_type_hints(kind).values():
                walk(hint)

    for root in roots:
        for hint in typing.get_type_hints(root).values():
            walk(hint)
    return [kind for kind in seen if kind not in roots]
