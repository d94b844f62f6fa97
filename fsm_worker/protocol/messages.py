"""Typed application messages and their one wire format.

Every payload that travels inside a peer message is one of the frozen attrs classes below. `parse_message`
turns a dict from the wire into a typed message (or raises `MessageError` naming the offending field);
`to_wire` turns a typed message back into exactly the documented JSON shape (see docs/protocol.md).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import attrs
import cattrs
import cattrs.gen

from fsm_worker.protocol.errors import MessageError

MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 64 * 1024


def _identifier(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise MessageError(attribute.name, f"must be 1-{MAX_ID_LENGTH} printable characters")


def _bounded_text(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if len(value) > MAX_TEXT_LENGTH:
        raise MessageError(attribute.name, f"longer than {MAX_TEXT_LENGTH} characters")


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise MessageError(attribute.name, "must not be negative")


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise MessageError(attribute.name, "must be at least 1")


def _opt_positive(instance: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None:
        _positive(instance, attribute, value)  # type: ignore[arg-type]


def _opt_non_negative(
    instance: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is not None:
        _non_negative(instance, attribute, value)


def _fraction(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise MessageError(attribute.name, "must be between 0 and 1")


# --- the messages -------------------------------------------------------------------------------------------


@attrs.frozen
class Message:
    """Base of every application message; `TYPE` is its `app_message_type`."""

    TYPE: ClassVar[str] = ""
    #: Fields with a fixed value on the wire (e.g. ``"status": "cancelled"``); written, never read.
    CONSTANTS: ClassVar[dict[str, Any]] = {}
    #: Optional fields that are sent as ``null`` rather than left out.
    KEEP_NULL: ClassVar[frozenset[str]] = frozenset()
    #: Fields left out on the wire while they hold their default (so older peers see the bytes they know).
    OMIT_DEFAULT: ClassVar[frozenset[str]] = frozenset()


@attrs.frozen
class Requirements:
    """What a job needs from a worker."""

    min_gpu_memory_mb: int = attrs.field(default=0, validator=_non_negative)
    #: Slots asked for together on one worker (issue 12; a CPU slot counts as one); left out on the wire when 1.
    gpus: int = attrs.field(default=1, validator=_positive)


def _sha256_hex(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value)):
        raise MessageError(attribute.name, "must be 64 lowercase hex digits (a sha256)")


def _job_key(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and not 16 <= len(value) <= MAX_ID_LENGTH:
        raise MessageError(attribute.name, f"must be 16-{MAX_ID_LENGTH} characters")


MAX_METRIC_FIELDS = 32


def _metric_extra(
    instance: object, attribute: attrs.Attribute[dict[str, float]], value: dict[str, float]
) -> None:
    if len(value) > MAX_METRIC_FIELDS:
        raise MessageError(attribute.name, f"more than {MAX_METRIC_FIELDS} entries")
    for key, number in value.items():
        if not key or len(key) > 64 or not isinstance(number, int | float) or isinstance(number, bool):
            raise MessageError(attribute.name, "names must be 1-64 characters and values numbers")


@attrs.frozen
class Metrics:
    """Training numbers a job reports (issue 11): all optional; `extra` holds job-type-defined ones."""

    epoch: int | None = None
    step: int | None = None
    loss: float | None = None
    val_loss: float | None = None
    learning_rate: float | None = None
    eta_seconds: float | None = None
    extra: dict[str, float] = attrs.field(factory=dict, validator=_metric_extra)


@attrs.frozen
class InputFile:
    """One entry of a job request's input manifest: checked by the job type before any byte moves."""

    name: str = attrs.field(validator=_bounded_text)
    size: int = attrs.field(validator=_non_negative)


# Client → worker
#
# `job_key` is the client's per-job secret: `job_request` carries only its sha256 (`job_key_sha256`, so losing
# bidders never learn it); every later message about the job that reads or changes it presents the key itself.


@attrs.frozen
class JobRequest(Message):
    TYPE: ClassVar[str] = "job_request"
    job_id: str = attrs.field(validator=_identifier)
    job_type: str = attrs.field(validator=_identifier)
    config: dict[str, Any] = attrs.field(factory=dict)
    requirements: Requirements = attrs.field(factory=Requirements)
    dataset_info: dict[str, Any] = attrs.field(factory=dict)
    job_key_sha256: str | None = attrs.field(default=None, validator=_sha256_hex)
    inputs: tuple[InputFile, ...] | None = None
    #: Issue 12: when no slot is free now, wait in the worker's queue instead of being refused `busy`.
    queue: bool = False
    OMIT_DEFAULT: ClassVar[frozenset[str]] = frozenset({"queue"})


@attrs.frozen
class JobAssignment(Message):
    TYPE: ClassVar[str] = "job_assignment"
    job_id: str = attrs.field(validator=_identifier)
    job_key: str | None = attrs.field(default=None, validator=_job_key)


@attrs.frozen
class JobCancel(Message):
    TYPE: ClassVar[str] = "job_cancel"
    job_id: str = attrs.field(validator=_identifier)
    job_key: str | None = attrs.field(default=None, validator=_job_key)


@attrs.frozen
class JobStop(Message):
    """Client → worker: stop the running job early and keep its outputs (SLEAP's Stop button)."""

    TYPE: ClassVar[str] = "job_stop"
    job_id: str = attrs.field(validator=_identifier)
    job_key: str | None = attrs.field(default=None, validator=_job_key)


@attrs.frozen
class JobSync(Message):
    """Client → worker: replay this job's events numbered above `after_seq` (up to `upto_seq` when given).

    With `upto_seq` the worker ends its answer with `job_head`: the client learns how far the job's events go
    without the worker resending an event that may still be on its way (`after_seq == upto_seq`: a probe).
    """

    TYPE: ClassVar[str] = "job_sync"
    job_id: str = attrs.field(validator=_identifier)
    after_seq: int = attrs.field(default=0, validator=_non_negative)
    job_key: str | None = attrs.field(default=None, validator=_job_key)
    upto_seq: int | None = attrs.field(default=None, validator=attrs.validators.optional(_non_negative))


@attrs.frozen
class RtcOffer(Message):
    """Client → worker: an SDP offer for the data channel of `job_id`."""

    TYPE: ClassVar[str] = "rtc_offer"
    job_id: str = attrs.field(validator=_identifier)
    sdp: str = attrs.field(validator=_bounded_text)
    options: dict[str, Any] = attrs.field(factory=dict)
    job_key: str | None = attrs.field(default=None, validator=_job_key)


# Worker → client


@attrs.frozen
class JobResponse(Message):
    TYPE: ClassVar[str] = "job_response"
    job_id: str = attrs.field(validator=_identifier)
    accepted: bool
    estimated_duration_minutes: float | None = None
    reason: str | None = None
    details: tuple[str, ...] | None = None
    #: Issue 12: accepted into the worker's queue (no slot yet), its 1-based place and estimated start.
    queued: bool | None = None
    queue_position: int | None = attrs.field(default=None, validator=_opt_positive)
    estimated_start_seconds: float | None = attrs.field(default=None, validator=_opt_non_negative)


@attrs.frozen
class JobCancelled(Message):
    TYPE: ClassVar[str] = "job_cancelled"
    CONSTANTS: ClassVar[dict[str, Any]] = {"status": "cancelled", "cleanup_complete": True}
    job_id: str = attrs.field(validator=_identifier)
    seq: int | None = None


@attrs.frozen
class ReservationExpired(Message):
    TYPE: ClassVar[str] = "reservation_expired"
    job_id: str = attrs.field(validator=_identifier)


@attrs.frozen
class JobStatus(Message):
    TYPE: ClassVar[str] = "job_status"
    job_id: str = attrs.field(validator=_identifier)
    status: str
    progress: float = attrs.field(validator=_fraction)
    message: str = attrs.field(validator=_bounded_text)
    seq: int | None = None
    metrics: Metrics | None = None
    #: With ``status="queued"`` (issue 12): the job's 1-based place in the worker's queue and estimated start.
    queue_position: int | None = attrs.field(default=None, validator=_opt_positive)
    estimated_start_seconds: float | None = attrs.field(default=None, validator=_opt_non_negative)


@attrs.frozen
class JobResult:
    training_duration_minutes: float = attrs.field(validator=_non_negative)
    model_size_mb: float | None = None


@attrs.frozen
class JobComplete(Message):
    TYPE: ClassVar[str] = "job_complete"
    CONSTANTS: ClassVar[dict[str, Any]] = {"status": "completed", "progress": 1.0}
    job_id: str = attrs.field(validator=_identifier)
    result: JobResult
    seq: int | None = None
    metrics: Metrics | None = None
    #: True when the client's `job_stop` ended the run early; the outputs are kept and downloadable.
    stopped_early: bool | None = None


@attrs.frozen
class JobError:
    code: str
    message: str = attrs.field(validator=_bounded_text)
    recoverable: bool


@attrs.frozen
class JobFailed(Message):
    TYPE: ClassVar[str] = "job_failed"
    CONSTANTS: ClassVar[dict[str, Any]] = {"status": "failed"}
    job_id: str = attrs.field(validator=_identifier)
    error: JobError
    seq: int | None = None


@attrs.frozen
class AppError(Message):
    TYPE: ClassVar[str] = "app_error"
    KEEP_NULL: ClassVar[frozenset[str]] = frozenset({"job_id"})
    code: str
    message: str
    job_id: str | None = None


@attrs.frozen
class JobHead(Message):
    """Worker → client, after the events a `job_sync` with `upto_seq` asked for: the job's last `seq`.

    Events reach a client in the order the worker sent them, so every event up to `last_seq` that was not lost is
    already there when this arrives: the ones still missing are lost and worth asking for.
    """

    TYPE: ClassVar[str] = "job_head"
    job_id: str = attrs.field(validator=_identifier)
    last_seq: int = attrs.field(validator=_non_negative)
    upto_seq: int = attrs.field(validator=_non_negative)


@attrs.frozen
class RtcAnswer(Message):
    TYPE: ClassVar[str] = "rtc_answer"
    job_id: str = attrs.field(validator=_identifier)
    sdp: str
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class UnknownMessage:
    """A well-formed payload whose `app_message_type` this version does not know: its own outcome, not an error."""

    app_message_type: str
    payload: dict[str, Any]


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        JobRequest,
        JobAssignment,
        JobCancel,
        JobStop,
        JobSync,
        RtcOffer,
        JobResponse,
        JobCancelled,
        ReservationExpired,
        JobStatus,
        JobComplete,
        JobFailed,
        AppError,
        JobHead,
        RtcAnswer,
    )
}

#: Job events carry a per-job sequence number so a client can detect loss and ask for a replay (`job_sync`).
JOB_EVENT_TYPES = (JobStatus, JobComplete, JobFailed, JobCancelled)
JobEvent = JobStatus | JobComplete | JobFailed | JobCancelled


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
