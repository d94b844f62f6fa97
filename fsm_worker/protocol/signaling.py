"""Wire vocabulary of the signaling server: error codes, limits and validation of untrusted input.

Every parser takes decoded JSON from a client and either returns a typed value or raises
:class:`SignalingRefusal` naming the problem; nothing here touches a socket.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

import attrs

from fsm_worker.protocol.errors import SignalingCode, SignalingRefusal

JSON: TypeAlias = Any
Role: TypeAlias = Literal["worker", "client"]
ROLES: tuple[Role, ...] = ("worker", "client")

MAX_DEPTH = 32
MAX_PEER_ID_CHARS = 128
MAX_TAGS = 64

MAX_TOKEN_CHARS = 1024
_PEER_ID_RE = re.compile(r"[A-Za-z0-9._:@+\-]+")
_SECRET_RE = re.compile(r"[A-Za-z0-9_\-]{32,128}")


def ok_ack(**fields: Any) -> dict[str, Any]:
    """An ``ok: true`` ack with extra fields."""
    return {"ok": True, **fields}


def error_ack(code: SignalingCode, message: str) -> dict[str, Any]:
    """An ``ok: false`` ack."""
    return {"ok": False, "code": str(code), "message": message}


def hash_secret(secret: str) -> str:
    """Hex sha256 of a secret or token; only hashes are stored or logged."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def is_valid_text(value: str) -> bool:
    """False for strings that cannot be UTF-8 (lone surrogates such as ``\\ud800`` from JSON escapes)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def room_for_token(token: str) -> str:
    """The room a token opens: the sha256 of the token, never the token itself."""
    return hash_secret(token)


def check_json(
    value: JSON,
    *,
    what: str,
    max_bytes: int,
    code: SignalingCode = SignalingCode.INVALID_MESSAGE,
    setting: str = "max_event_bytes",
) -> None:
    """Refuse values nested deeper than :data:`MAX_DEPTH` or larger than ``max_bytes`` once encoded.

    ``setting`` names the limit in the refusal, so the peer knows what to change or ask for.
    """
    stack: list[tuple[JSON, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            raise SignalingRefusal(code, f"{what} is nested deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    try:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    except UnicodeEncodeError:
        raise SignalingRefusal(
            code, f"{what} holds a string that is not valid UTF-8 (a lone surrogate)"
        ) from None
    except (TypeError, ValueError) as exc:  # not JSON (cannot happen for decoded input, but be total)
        raise SignalingRefusal(code, f"{what} is not JSON: {exc}") from None
    if size > max_bytes:
        raise SignalingRefusal(
            SignalingCode.PAYLOAD_TOO_LARGE, f"{what} is {size} bytes, limit is {max_bytes} ({setting})"
        )


def parse_peer_id(
    value: object, *, code: SignalingCode = SignalingCode.INVALID_MESSAGE, field: str = "peer_id"
) -> str:
    """A peer id: 1..128 characters of ``[A-Za-z0-9._:@+-]``."""
    if not isinstance(value, str) or not value:
        raise SignalingRefusal(code, f"{field} must be a non-empty string")
    if len(value) > MAX_PEER_ID_CHARS or not _PEER_ID_RE.fullmatch(value):
        raise SignalingRefusal(
            code, f"{field} must be at most {MAX_PEER_ID_CHARS} characters of letters, digits and ._:@+-"
        )
    return value


def single_arg(args: tuple[Any, ...], event: str) -> dict[str, Any]:
    """The one dict argument of an event."""
    if len(args) != 1 or not isinstance(args[0], dict):
        raise SignalingRefusal(SignalingCode.INVALID_MESSAGE, f"{event} takes exactly one JSON object")
    return args[0]


def parse_metadata(
    value: object, *, max_bytes: int, allow_null: bool, setting: str = "max_metadata_bytes"
) -> dict[str, Any]:
    """Peer metadata: an object whose optional ``tags`` is a list of strings and ``properties`` an object.

    With ``allow_null`` (updates) ``null`` values are kept (they mean "delete"); otherwise refused.
    """
    code = SignalingCode.INVALID_METADATA
    if not isinstance(value, dict):
        raise SignalingRefusal(code, "metadata must be a JSON object")
    check_json(value, what="metadata", max_bytes=max_bytes, code=code, setting=setting)
    tags = value.get("tags")
    if "tags" in value and not (tags is None and allow_null):
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise SignalingRefusal(code, "metadata.tags must be a list of strings")
        if len(tags) > MAX_TAGS:
            raise SignalingRefusal(code, f"metadata.tags has more than {MAX_TAGS} entries")
    props = value.get("properties")
    if "properties" in value and not (props is None and allow_null):
        if not isinstance(props, dict):
            raise SignalingRefusal(code, "metadata.properties must be a JSON object")
        if not allow_null and any(v is None for v in props.values()):
            raise SignalingRefusal(code, "metadata.properties values must not be null here")
    if not allow_null and any(v is None for v in value.values()):
        raise SignalingRefusal(code, "metadata values must not be null here")
    return dict(value)


def merge_metadata(current: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Apply an update: ``properties`` merge key by key (``null`` deletes), anything else replaces."""
    merged = dict(current)
    for key, value in update.items():
        if key == "properties" and isinstance(value, dict):
            props = dict(merged.get("properties") or {})
            for pkey, pvalue in value.items():
                if pvalue is None:
                    props.pop(pkey, None)
                else:
                    props[pkey] = pvalue
            merged["properties"] = props
        elif value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def metadata_delta(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The ``update_metadata`` body that turns ``old`` into ``new`` (``None`` deletes)."""
    delta: dict[str, Any] = {k: None for k in old if k not in new}
    delta.update({k: v for k, v in new.items() if k != "properties"})
    old_props, new_props = old.get("properties") or {}, new.get("properties") or {}
    if old_props or new_props:
        props = {k: None for k in old_props if k not in new_props}
        props.update(new_props)
        delta["properties"] = props
    return delta


@attrs.frozen
class AuthRequest:
    """A validated connect ``auth`` dict."""

    token: str
    peer_id: str
    role: Role
    metadata: dict[str, Any]
    resume_secret: str | None


def parse_auth(value: object, *, max_bytes: int) -> AuthRequest:
    """Validate the Socket.IO connect ``auth`` payload."""
    code = SignalingCode.INVALID_AUTH
    if not isinstance(value, dict):
        raise SignalingRefusal(code, "auth must be an object with token, peer_id, role and metadata")
    token = value.get("token")
    if not isinstance(token, str) or not token:
        raise SignalingRefusal(code, "auth.token must be a non-empty string")
    if len(token) > MAX_TOKEN_CHARS:
        raise SignalingRefusal(code, f"auth.token is longer than {MAX_TOKEN_CHARS} characters")
    if not is_valid_text(token):
        raise SignalingRefusal(code, "auth.token is not valid UTF-8 (it holds a lone surrogate)")
    peer_id = parse_peer_id(value.get("peer_id"), code=code, field="auth.peer_id")
    role = value.get("role")
    if role not in ROLES:
        raise SignalingRefusal(code, "auth.role must be 'worker' or 'client'")
    metadata = value.get("metadata", {})
    try:
        metadata = parse_metadata({} if metadata is None else metadata, max_bytes=max_bytes, allow_null=False)
    except SignalingRefusal as exc:
        raise SignalingRefusal(code, f"auth.{exc.message}") from None
    secret = value.get("resume_secret")
    if secret is not None and (not isinstance(secret, str) or not _SECRET_RE.fullmatch(secret)):
        raise SignalingRefusal(code, "auth.resume_secret must be 32-128 URL-safe characters")
    extra = set(value) - {"token", "peer_id", "role", "metadata", "resume_secret"}
    if extra:
        raise SignalingRefusal(code, f"auth has unknown fields: {', '.join(sorted(map(str, extra)))}")
    return AuthRequest(token=token, peer_id=peer_id, role=role, metadata=metadata, resume_secret=secret)


@attrs.frozen
class PeerMessage:
    """A validated ``peer_message`` request."""

    to_peer_id: str
    payload: dict[str, Any]


def parse_peer_message(args: tuple[Any, ...], *, max_bytes: int) -> PeerMessage:
    """Validate ``peer_message`` ``{"to_peer_id", "payload": {...}}``; other fields (a forged sender) are ignored."""
    data = single_arg(args, "peer_message")
    to_peer_id = parse_peer_id(data.get("to_peer_id"), field="to_peer_id")
    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise SignalingRefusal(SignalingCode.INVALID_MESSAGE, "payload must be a JSON object")
    check_json(payload, what="payload", max_bytes=max_bytes)
    return PeerMessage(to_peer_id=to_peer_id, payload=payload)


def parse_update_metadata(args: tuple[Any, ...], *, max_bytes: int) -> dict[str, Any]:
    """Validate ``update_metadata`` ``{"metadata": {...}}``."""
    data = single_arg(args, "update_metadata")
    if "metadata" not in data:
        raise SignalingRefusal(SignalingCode.INVALID_MESSAGE, "update_metadata needs a metadata object")
    return parse_metadata(data["metadata"], max_bytes=max_bytes, allow_null=True)


#: A hold's job reference: an opaque hex digest the worker derives from the job (never the job id).
_JOB_REF_RE = re.compile(r"[0-9a-f]{16,64}")


@attrs.frozen
class HoldClaim:
    """One hold a worker claims (``held``) or releases for a client of its room."""

    client: str
    job_ref: str
    held: bool = True


@attrs.frozen
class HoldRequest:
    """A validated ``hold``: one claim or release, or (``sync``) the worker's whole set of holds."""

    claim: HoldClaim | None
    sync: tuple[HoldClaim, ...] | None = None


def _hold_entry(value: object, where: str, *, with_held: bool) -> HoldClaim:
    code = SignalingCode.INVALID_MESSAGE
    if not isinstance(value, dict):
        raise SignalingRefusal(code, f"{where} must be an object with client and job_ref")
    client = parse_peer_id(value.get("client"), field=f"{where}.client")
    job_ref = value.get("job_ref")
    if not isinstance(job_ref, str) or not _JOB_REF_RE.fullmatch(job_ref):
        raise SignalingRefusal(code, f"{where}.job_ref must be 16-64 lowercase hex characters")
    held = value.get("held", True) if with_held else True
    if not isinstance(held, bool):
        raise SignalingRefusal(code, f"{where}.held must be true or false")
    extra = set(value) - {"client", "job_ref", *(("held",) if with_held else ())}
    if extra:
        raise SignalingRefusal(code, f"{where} has unknown fields: {', '.join(sorted(map(str, extra)))}")
    return HoldClaim(client, job_ref, held)


def parse_hold(args: tuple[Any, ...], *, max_entries: int) -> HoldRequest:
    """Validate ``hold`` ``{"client", "job_ref", "held"}`` or ``{"sync": [{"client", "job_ref"}, ...]}``."""
    data = single_arg(args, "hold")
    if "sync" not in data:
        return HoldRequest(_hold_entry(data, "hold", with_held=True))
    entries = data["sync"]
    if set(data) != {"sync"} or not isinstance(entries, list):
        raise SignalingRefusal(SignalingCode.INVALID_MESSAGE, "hold.sync must be the only field, a list")
    if len(entries) > max_entries:
        raise SignalingRefusal(
            SignalingCode.HOLD_LIMIT,
            f"hold.sync lists {len(entries)} holds; a worker may hold max_holds_per_worker ({max_entries})",
        )
    return HoldRequest(
        None, tuple(_hold_entry(e, f"hold.sync[{i}]", with_held=False) for i, e in enumerate(entries))
    )
