"""Socket.IO packets for our JSON-only events: orjson to encode and decode, and no binary scan on every emit.

python-socketio walks every emitted payload looking for bytes (to use binary attachments); our events never
carry any, and for a 5,000-peer discovery answer that walk cost more than building the answer. Anything
orjson refuses (non-string keys, NaN from a lenient peer) falls back to the standard library, so what goes
over the wire is the same JSON as before.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import socketio.packet


class _Json:
    """The `json` module interface python-socketio expects, backed by orjson."""

    @staticmethod
    def dumps(data: Any, **options: Any) -> str:
        try:
            return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:
            return json.dumps(data, separators=(",", ":"))

    @staticmethod
    def loads(text: str | bytes, **options: Any) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return json.loads(text)


class JsonPacket(socketio.packet.Packet):  # type: ignore[misc]
    """A Socket.IO packet for events whose data is plain JSON."""

    uses_binary_events = False
    json = _Json
