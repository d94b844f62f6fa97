"""The wire checked against docs/asyncapi.yaml while the tests run (installed for every test by conftest).

What the in-process code puts on the wire, and what it accepts from it, must fit the published schemas:

- every message `to_wire` builds and every frame `encode_frame` writes validates against its schema;
- every payload `parse_message` / `parse_frame` accepts validates too (the schema is never narrower than
  the parser; hostile input the parser refuses is not the contract's business);
- the server's emits (`peer_message`, `welcome`, `session_replaced`), every ack, every accepted request and
  every accepted connect `auth` validate against the signaling schemas.

Servers and workers started as subprocesses are not covered. `FSM_WIRE_REPORT=1` (with `-s`) prints how
many values each test checked.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import pytest
import socketio
from jsonschema import Draft7Validator

from fsm_worker.protocol import asyncapi, messages, signaling_schema
from fsm_worker.protocol.transfer import frames
from fsm_worker.server.peer_events import PeerEvents
from fsm_worker.server.server import SignalingServer

COMPONENTS = asyncapi.build()["components"]
REQUESTS = {event: (request, ack) for event, request, ack, _ in signaling_schema.PEER_EVENTS}
SERVER_EMITS = {event: schema for event, schema, _ in signaling_schema.SERVER_EVENTS}


@functools.cache
def validator(schema: str) -> Draft7Validator:
    """A validator of one component schema (references resolve inside the document)."""
    return Draft7Validator({"$ref": f"#/components/schemas/{schema}", "components": COMPONENTS})


def problems(schema: str, value: object) -> list[str]:
    """Why `value` does not fit `schema` (empty when it does)."""
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator(schema).iter_errors(value)
    ]


class WireCheck:
    """Collects every mismatch between what crossed the wire and the schemas."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        #: How many values were checked, by where they were seen.
        self.checked: dict[str, int] = {}

    def check(self, schema: str, value: object, where: str) -> None:
        kind = where.split(":")[0]
        self.checked[kind] = self.checked.get(kind, 0) + 1
        for problem in problems(schema, value)[:3]:
            self.violations.append(f"{where} ({schema}): {problem} in {json.dumps(value, default=str)[:300]}")

    def check_envelope(self, schema: str, data: object, where: str) -> None:
        """A peer_message envelope: the server relays any object payload, so only a payload the parser
        takes for a known message must fit that message's schema."""
        if not isinstance(data, dict):
            self.check(schema, data, where)
            return
        payload = data.get("payload")
        self.check(schema, {**data, "payload": {"app_message_type": "job_cancel", "job_id": "x"}}, where)
        try:
            parsed = messages.parse_message(payload)
        except messages.MessageError:
            return
        if isinstance(parsed, messages.Message):
            self.check(type(parsed).__name__, payload, f"{where}: payload")

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._rebind(monkeypatch, messages.to_wire, self._to_wire)
        self._rebind(monkeypatch, messages.parse_message, self._parse_message)
        self._rebind(monkeypatch, frames.encode_frame, self._encode_frame)
        self._rebind(monkeypatch, frames.parse_frame, self._parse_frame)
        monkeypatch.setattr(PeerEvents, "guarded", self._guarded(PeerEvents.guarded))
        monkeypatch.setattr(SignalingServer, "_on_connect", self._on_connect(SignalingServer._on_connect))
        monkeypatch.setattr(socketio.AsyncServer, "emit", self._emit(socketio.AsyncServer.emit))

    @staticmethod
    def _rebind(
        monkeypatch: pytest.MonkeyPatch, original: Callable[..., Any], make: Callable[..., Any]
    ) -> None:
        """Replace `original` in every loaded module that imported it by name."""
        wrapper = make(original)
        for module in list(sys.modules.values()):
            if getattr(module, original.__name__, None) is original:
                monkeypatch.setattr(module, original.__name__, wrapper)

    def _to_wire(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def to_wire(message: messages.Message) -> dict[str, Any]:
            wire: dict[str, Any] = original(message)
            self.check(type(message).__name__, wire, "to_wire")
            return wire

        return to_wire

    def _parse_message(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def parse_message(payload: object) -> object:
            parsed = original(payload)
            if isinstance(parsed, messages.Message) and isinstance(payload, dict):
                # The parser ignores the fixed fields (`CONSTANTS`, written, never read): judge the rest.
                self.check(type(parsed).__name__, {**payload, **parsed.CONSTANTS}, "parse_message accepted")
            return parsed

        return parse_message

    def _encode_frame(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def encode_frame(frame: Any) -> str:
            text: str = original(frame)
            self.check(f"Frame{type(frame).__name__}", json.loads(text), "encode_frame")
            return text

        return encode_frame

    def _parse_frame(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def parse_frame(text: str) -> Any:
            frame = original(text)
            self.check(f"Frame{type(frame).__name__}", json.loads(text), "parse_frame accepted")
            return frame

        return parse_frame

    def _guarded(self, original: Callable[..., Any]) -> Callable[..., Any]:
        check = self.check

        def guarded(events: PeerEvents, name: str, handler: Any) -> Any:
            run = original(events, name, handler)

            async def checked(sid: str, *args: Any) -> dict[str, Any]:
                ack: dict[str, Any] = await run(sid, *args)
                if name in REQUESTS:
                    request, ack_schema = REQUESTS[name]
                    check(ack_schema, ack, f"ack of {name}")
                    if ack.get("ok") and len(args) == 1 and name == "peer_message":
                        self.check_envelope(request, args[0], f"{name} accepted")
                    elif ack.get("ok") and len(args) == 1:
                        check(request, args[0], f"{name} accepted")
                return ack

            return checked

        return guarded

    def _on_connect(self, original: Callable[..., Any]) -> Callable[..., Any]:
        check = self.check

        async def on_connect(
            server: SignalingServer, sid: str, environ: Any = None, auth: Any = None, *extra: Any
        ) -> Any:
            result = await original(server, sid, environ, auth, *extra)
            if result is True:
                check("Auth", auth, "connect accepted")
            return result

        return on_connect

    def _emit(self, original: Callable[..., Any]) -> Callable[..., Any]:
        check = self.check

        async def emit(
            server: socketio.AsyncServer, event: str, data: Any = None, *args: Any, **kwargs: Any
        ) -> Any:
            if event == "peer_message":
                self.check_envelope(SERVER_EMITS[event], data, f"server emit {event}")
            elif event in SERVER_EMITS:
                check(SERVER_EMITS[event], data, f"server emit {event}")
            return await original(server, event, data, *args, **kwargs)

        return emit
