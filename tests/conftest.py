"""Fixtures shared by every test directory."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from rooms import Room
from support.contract import WireCheck
from support.signaling import free_port


@pytest.fixture(autouse=True)
def wire_contract(monkeypatch: pytest.MonkeyPatch) -> Iterator[WireCheck]:
    """Every test: what crosses the wire in this process must fit docs/asyncapi.yaml (tests/support/contract.py)."""
    wire = WireCheck()
    wire.install(monkeypatch)
    yield wire
    if os.environ.get("FSM_WIRE_REPORT"):
        print("wire checked:", wire.checked)
    assert not wire.violations, "the wire broke docs/asyncapi.yaml:\n" + "\n".join(wire.violations[:10])


@pytest.fixture
async def room(tmp_path: Path) -> AsyncIterator[Room]:
    """A real signaling server on a free loopback port, and factories of peers in its room."""
    room = Room(secrets.token_hex(12), free_port(), tmp_path)
    await room.start_server()
    try:
        yield room
    finally:
        await room.close()
