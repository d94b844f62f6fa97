"""Control frames: JSON text messages with a ``type`` field; chunks are binary messages.

Parsing is strict (no coercion of ``"12"`` to ``12``, no unknown fields) and raises
:class:`FrameError` naming the offending field.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, TypeAlias

import attrs
import cattrs
from cattrs.v import format_exception

from fsm_worker.protocol.transfer.errors import FrameError

SHA256_RE = re.compile(r"[0-9a-f]{64}")
NONCE_RE = re.compile(r"[0-9a-f]{32}")
MAX_CONTROL_FRAME = 64 * 1024
CHUNK_REF = "chunk"  # ``ref`` of an error frame caused by a binary (chunk) message


def _sha256(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not SHA256_RE.fullmatch(value):
        raise ValueError(f"{attribute.name} must be 64 lowercase hex digits")


def _opt_sha256(_inst: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and not SHA256_RE.fullmatch(value):
        raise ValueError(f"{attribute.name} must be 64 lowercase hex digits")


def _nonce(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not NONCE_RE.fullmatch(value):
        raise ValueError(f"{attribute.name} must be 32 lowercase hex digits")


_non_negative = attrs.validators.ge(0)


# client -> worker
@attrs.frozen
class Put:
    """Upload header: a file the client wants to send."""

    TYPE: ClassVar[str] = "put"
    name: str
    size: int = attrs.field(validator=_non_negative)
    sha256: str = attrs.field(validator=_sha256)
    restart: bool = False  # discard any partial upload and start at offset 0


@attrs.frozen
class Proof:
    """Client: proof that it holds the content: sha256 of the nonce's ASCII bytes followed by the file."""

    TYPE: ClassVar[str] = "proof"
    name: str
    sha256: str = attrs.field(validator=_sha256)


@attrs.frozen
class End:
    """End marker of one file's chunks (both directions)."""

    TYPE: ClassVar[str] = "end"
    name: str


@attrs.frozen
class Commit:
    """Client: all inputs are uploaded; the job may start."""

    TYPE: ClassVar[str] = "commit"


@attrs.frozen
class Held:
    """A file the client already holds in the download destination: its relative name, size and sha256."""

    name: str
    size: int = attrs.field(validator=_non_negative)
    sha256: str = attrs.field(validator=_sha256)


@attrs.frozen
class Partial:
    """A result the client holds the first ``offset`` bytes of (a dropped download); ``prefix_sha256`` hashes them."""

    name: str
    offset: int = attrs.field(validator=_non_negative)
    prefix_sha256: str = attrs.field(validator=_sha256)


@attrs.frozen
class FetchResults:
    """Client: send me the job's result files; ``have`` lists files it already holds (not resent if equal).

    ``resume``: the file a dropped download was in; the worker sends it from ``offset`` if the prefix matches.
    """

    TYPE: ClassVar[str] = "fetch_results"
    have: list[Held] = attrs.field(factory=list)
    resume: Partial | None = None


# worker -> client
@attrs.frozen
class Ready:
    """Send the bytes of ``name`` starting at ``offset``; ``prefix_sha256`` hashes bytes [0, offset)."""

    TYPE: ClassVar[str] = "ready"
    name: str
    offset: int = attrs.field(validator=_non_negative)
    prefix_sha256: str | None = attrs.field(default=None, validator=_opt_sha256)


@attrs.frozen
class Prove:
    """Dedupe challenge: the worker holds this content; prove you do too (answer with ``proof``)."""

    TYPE: ClassVar[str] = "prove"
    name: str
    nonce: str = attrs.field(validator=_nonce)


@attrs.frozen
class Have:
    """Dedupe: the worker already holds this content; it is in place, send nothing."""

    TYPE: ClassVar[str] = "have"
    name: str
    size: int = attrs.field(validator=_non_negative)
    sha256: str = attrs.field(validator=_sha256)


@attrs.frozen
class Ack:
    """A file arrived complete and its size and sha256 were verified."""

    TYPE: ClassVar[str] = "ack"
    name: str
    size: int = attrs.field(validator=_non_negative)
    sha256: str = attrs.field(validator=_sha256)


@attrs.frozen
class Committed:
    """The host accepted the commit; ``files`` are the job's input names."""

    TYPE: ClassVar[str] = "committed"
    files: list[str]


@attrs.frozen
class FileHeader:
    """Download header: a result file follows as chunks and an ``end`` frame."""

    TYPE: ClassVar[str] = "file"
    name: str
    size: int = attrs.field(validator=_non_negative)
    sha256: str = attrs.field(validator=_sha256)
    offset: int = attrs.field(default=0, validator=_non_negative)  # bytes [offset, size) follow (resume)


@attrs.frozen
class Manifest:
    """Download: the next entries of the results manifest, in sending order (before any result's bytes)."""

    TYPE: ClassVar[str] = "manifest"
    files: list[Held]


@attrs.frozen
class Same:
    """Download: the client holds this result with this size and sha256 (its ``have``); no bytes follow."""

    TYPE: ClassVar[str] = "same"
    name: str
    size: int = attrs.field(validator=_non_negative)
    sha256: str = attrs.field(validator=_sha256)


@attrs.frozen
class Results:
    """Download announcement: ``count`` files totalling ``total_size`` bytes follow."""

    TYPE: ClassVar[str] = "results"
    count: int = attrs.field(validator=_non_negative)
    total_size: int = attrs.field(validator=_non_negative)


@attrs.frozen
class ResultsDone:
    """All result files were sent."""

    TYPE: ClassVar[str] = "results_done"
    count: int = attrs.field(validator=_non_negative)


@attrs.frozen
class Error:
    """A refused frame or failed operation; ``ref`` is the type of the frame that caused it."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    name: str | None = None
    ref: str | None = None


Frame: TypeAlias = (
    Put
    | Proof
    | Prove
    | End
    | Commit
    | FetchResults
    | Ready
    | Have
    | Ack
    | Committed
    | FileHeader
    | Manifest
    | Same
    | Results
    | ResultsDone
    | Error
)
FRAME_TYPES: dict[str, type[Frame]] = {
    cls.TYPE: cls
    for cls in (
        Put,
        Proof,
        Prove,
        End,
        Commit,
        FetchResults,
        Ready,
        Have,
        Ack,
        Committed,
        FileHeader,
        Manifest,
        Same,
        Results,
        ResultsDone,
        Error,
    )
}


def _strict(kind: type[Any]) -> Any:
    def hook(value: Any, _type: Any) -> Any:
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return hook


_converter = cattrs.Converter(forbid_extra_keys=True)
for _kind in (str, int, bool):
    _converter.register_structure_hook(_kind, _strict(_kind))


def _strings(value: Any, _type: Any) -> list[str]:
    """Only a JSON array of strings is a list (cattrs alone would take a string's characters or a dict's keys)."""
    if type(value) is not list or not all(type(item) is str for item in value):
        raise TypeError(f"expected an array of strings, got {type(value).__name__}")
    return list(value)


_converter.register_structure_hook_func(lambda kind: kind == list[str], _strings)


def _held(value: Any, _type: Any) -> list[Held]:
    """Only a JSON array of objects is a ``have`` list."""
    if type(value) is not list or not all(type(item) is dict for item in value):
        raise TypeError(f"expected an array of objects, got {type(value).__name__}")
    return [_converter.structure(item, Held) for item in value]


_converter.register_structure_hook_func(lambda kind: kind == list[Held], _held)


def _format_exception(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, ValueError) and str(exc):
        return f"invalid value ({exc})"
    return format_exception(exc, type_)


def parse_frame(text: str) -> Frame:
    """Parse one control frame; raise :class:`FrameError` on any defect."""
    if len(text) > MAX_CONTROL_FRAME:
        raise FrameError(f"control frame longer than {MAX_CONTROL_FRAME} characters")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FrameError(f"control frame is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise FrameError("control frame must be a JSON object")
    kind = data.pop("type", None)
    cls = FRAME_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise FrameError(f"type: unknown frame type {kind!r}")
    try:
        frame: Frame = _converter.structure(data, cls)
    except cattrs.BaseValidationError as exc:
        details = cattrs.transform_error(exc, path="frame", format_exception=_format_exception)
        raise FrameError(f"{kind}: " + "; ".join(details)) from exc
    except (ValueError, TypeError) as exc:
        raise FrameError(f"{kind}: {exc}") from exc
    return frame


def encode_frame(frame: Frame) -> str:
    """Serialize a control frame to its JSON text."""
    data: dict[str, Any] = {"type": frame.TYPE}
    data.update(_converter.unstructure(frame))
    if isinstance(frame, FetchResults):  # a plain ``{"type": "fetch_results"}`` when the client holds nothing
        if not frame.have:
            del data["have"]
        if frame.resume is None:
            del data["resume"]
    if isinstance(frame, FileHeader) and not frame.offset:
        del data["offset"]
    return json.dumps(data, separators=(",", ":"))
