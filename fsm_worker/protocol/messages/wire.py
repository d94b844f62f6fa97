"""The one wire format of the application messages: `parse_message` turns a dict from the wire into a typed
message (or raises `MessageError` naming the offending field); `to_wire` turns a typed message back into
exactly the documented JSON shape (see docs/protocol.md)."""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import cattrs
import cattrs.gen

from fsm_worker.protocol.errors import MessageError
from fsm_worker.protocol.messages import to_client, to_worker
from fsm_worker.protocol.messages.base import Message, UnknownMessage
from fsm_worker.protocol.messages.checks import MAX_ID_LENGTH
from fsm_worker.protocol.messages.values import Metrics, Requirements

MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        to_worker.JobRequest,
        to_worker.JobAssignment,
        to_worker.JobCancel,
        to_worker.JobStop,
        to_worker.JobSync,
        to_worker.RtcOffer,
        to_client.JobResponse,
        to_client.JobCancelled,
        to_client.ReservationExpired,
        to_client.JobStatus,
        to_client.JobComplete,
        to_client.JobFailed,
        to_client.AppError,
        to_client.JobHead,
        to_client.RtcAnswer,
    )
}


# --- (de)serialisation ------------------------------------------------------------------------------------------

_converter = cattrs.Converter(forbid_extra_keys=False)


def _strict(kind: type) -> Any:
    def structure(value: object, _: object) -> object:
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return structure


def _number(value: object, _: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"expected a finite number, got {value!r:.40}")
    return float(value)


for _kind in (str, int, bool, dict):
    _converter.register_structure_hook(_kind, _strict(_kind))
_converter.register_structure_hook(float, _number)
_converter.register_structure_hook_func(lambda kind: kind == dict[str, Any], _strict(dict))


def _object_hook(cls: type) -> Any:
    """Attrs classes are built only from JSON objects (cattrs alone would accept any mapping-like value)."""
    build: Callable[[Any, type], Any] = cattrs.gen.make_dict_structure_fn(cls, _converter)

    def structure(value: object, kind: type) -> object:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        return build(value, kind)

    return structure


_converter.register_structure_hook_factory(attrs.has, _object_hook)


def _is_tuple(kind: Any) -> bool:
    origin: object = typing.get_origin(kind)
    return origin is tuple


_converter.register_unstructure_hook_func(_is_tuple, list)


def _tuple_from_array(value: object, kind: Any) -> tuple[Any, ...]:
    """Only a JSON array is a tuple (cattrs alone would take a string's characters or a dict's keys)."""
    if not isinstance(value, list):
        raise TypeError(f"expected an array, got {type(value).__name__}")
    items: Any = list[typing.get_args(kind)[0]]  # type: ignore[misc]
    return tuple(_converter.structure(value, items))


_converter.register_structure_hook_func(_is_tuple, _tuple_from_array)
_metrics_fields = cattrs.gen.make_dict_unstructure_fn(Metrics, _converter)
_converter.register_unstructure_hook(
    Metrics, lambda metrics: {k: v for k, v in _metrics_fields(metrics).items() if v is not None and v != {}}
)

_requirements_fields = cattrs.gen.make_dict_unstructure_fn(Requirements, _converter)
_converter.register_unstructure_hook(
    Requirements,
    lambda wanted: {k: v for k, v in _requirements_fields(wanted).items() if not (k == "gpus" and v == 1)},
)

M = TypeVar("M", bound=Message)


def _locate(error: BaseException, path: tuple[str, ...] = ()) -> MessageError:
    """Turn a (nested) structuring error into a `MessageError` whose field is the dotted path to the culprit."""
    if isinstance(error, MessageError):
        return MessageError(".".join((*path, error.field)), error.message)
    if isinstance(error, cattrs.ClassValidationError):
        noted, _ = error.group_exceptions()
        if noted:
            inner, note = noted[0]
            return _locate(inner, (*path, str(note.name)))
    if isinstance(error, KeyError):
        return MessageError(".".join(path) or "payload", "required field missing")
    if isinstance(error, cattrs.BaseValidationError) and error.exceptions:
        return _locate(error.exceptions[0], path)
    reason = str(error) if isinstance(error, TypeError | ValueError) else "invalid value"
    return MessageError(".".join(path) or "payload", reason)


def structure(payload: dict[str, Any], cls: type[M]) -> M:
    """Build `cls` from a wire dict, or raise `MessageError` naming the field."""
    try:
        return _converter.structure(payload, cls)
    except (cattrs.BaseValidationError, MessageError) as error:
        raise _locate(error) from None


def parse_message(payload: object) -> Message | UnknownMessage:
    """One entry point from the wire: a dict → a typed message, `UnknownMessage`, or `MessageError`."""
    if not isinstance(payload, dict):
        raise MessageError("payload", f"expected an object, got {type(payload).__name__}")
    kind = payload.get("app_message_type")
    if not isinstance(kind, str) or not kind:
        raise MessageError("app_message_type", "missing or not a string")
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        return UnknownMessage(kind[:MAX_ID_LENGTH], payload)
    return structure(payload, cls)


def to_wire(message: Message) -> dict[str, Any]:
    """The message as the documented JSON object: type, constants, then its fields (nulls left out)."""
    fields: dict[str, Any] = _converter.unstructure(message)
    defaults = {name: getattr(attrs.fields(type(message)), name).default for name in message.OMIT_DEFAULT}
    body = {
        key: value
        for key, value in fields.items()
        if (value is not None or key in message.KEEP_NULL)
        and not (key in defaults and value == defaults[key])
    }
    return {"app_message_type": message.TYPE, **message.CONSTANTS, **body}
