"""``discover_peers`` at any room size: filters, a page ``limit``, a ``cursor`` and ``fields`` selection (pure).

Matching peers are ordered by peer id; a page holds at most ``limit`` of them and, when more follow,
``next_cursor`` (the last peer id of the page) asks for the next page. ``fields`` picks which metadata keys
come back (``"tags"``, ``"properties"`` or ``"properties.<key>"``); ``peer_id`` and ``role`` always do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from fsm_worker.protocol.errors import SignalingCode, SignalingRefusal
from fsm_worker.protocol.signaling import MAX_PEER_ID_CHARS, single_arg
from fsm_worker.server.filters import Filters, parse_filters
from fsm_worker.server.registry import PeerView

MAX_FIELDS = 32
_KNOWN = frozenset({"filters", "limit", "cursor", "fields"})


@attrs.frozen
class DiscoveryRequest:
    """A validated ``discover_peers`` request."""

    filters: Filters
    limit: int
    cursor: str | None = None
    fields: tuple[str, ...] | None = None


def parse_discovery(
    args: tuple[Any, ...], *, max_bytes: int, default_limit: int, max_limit: int
) -> DiscoveryRequest:
    """Validate ``{"filters"?, "limit"?, "cursor"?, "fields"?}``; a limit above ``max_limit`` is refused."""
    data = single_arg(args, "discover_peers")
    code = SignalingCode.INVALID_FILTER
    unknown = set(data) - _KNOWN
    if unknown:
        raise SignalingRefusal(
            code, f"discover_peers has unknown fields: {', '.join(sorted(map(str, unknown)))}"
        )
    filters = parse_filters(({"filters": data.get("filters")},), max_bytes=max_bytes)
    limit = data.get("limit", default_limit)
    if limit is None:
        limit = default_limit
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise SignalingRefusal(code, "limit must be a positive integer")
    if limit > max_limit:
        raise SignalingRefusal(code, f"limit {limit} is above the maximum {max_limit} (discover_max_limit)")
    cursor = data.get("cursor")
    if cursor is not None and (not isinstance(cursor, str) or not 0 < len(cursor) <= MAX_PEER_ID_CHARS):
        raise SignalingRefusal(code, "cursor must be the next_cursor string of a previous answer")
    fields = data.get("fields")
    if fields is not None:
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise SignalingRefusal(code, "fields must be a list of strings")
        if len(fields) > MAX_FIELDS:
            raise SignalingRefusal(code, f"fields has more than {MAX_FIELDS} entries")
        fields = tuple(fields)
    return DiscoveryRequest(filters=filters, limit=limit, cursor=cursor, fields=fields)


def select_fields(metadata: Mapping[str, Any], fields: tuple[str, ...] | None) -> dict[str, Any]:
    """The requested part of a peer's metadata (all of it when ``fields`` is ``None``)."""
    if fields is None:
        return dict(metadata)
    out: dict[str, Any] = {}
    props = metadata.get("properties")
    for name in fields:
        top, _, sub = name.partition(".")
        if not sub:
            if top in metadata:
                out[top] = metadata[top]
        elif top == "properties" and isinstance(props, dict) and sub in props:
            picked = out.setdefault("properties", {})
            if isinstance(picked, dict):
                picked[sub] = props[sub]
    return out


def page(
    peers: Iterable[PeerView], request: DiscoveryRequest, *, exclude: str
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of matching peers (never ``exclude``, the asker) and the cursor of the next page."""
    matching = sorted(
        (p for p in peers if p.peer_id != exclude and request.filters.matches(p.role, p.metadata)),
        key=lambda p: p.peer_id,
    )
    if request.cursor is not None:
        matching = [p for p in matching if p.peer_id > request.cursor]
    chosen = matching[: request.limit]
    more = len(matching) > request.limit
    found = [
        {"peer_id": p.peer_id, "role": p.role, "metadata": select_fields(p.metadata, request.fields)}
        for p in chosen
    ]
    return found, (chosen[-1].peer_id if more and chosen else None)
