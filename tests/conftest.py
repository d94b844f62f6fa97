"""Fixtures shared by every test directory."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rooms import Room
from support.signaling import free_port


@pytest.fixture
async def room(tmp_path: Path) -> AsyncIterator[Room]:
    """A real signaling server on a free loopback port, and factories of peers in its room."""
    room = Room(secrets.token_hex(12), free_port(), tmp_path)
    await room.start_server()
    try:
        yield room
    finally:
        await room.close()
