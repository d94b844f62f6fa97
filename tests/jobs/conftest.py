"""Fixtures for the job-execution tests; helpers live in ``support.jobs``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from support.jobs import TIMEOUT, make_registry

from fsm_worker.jobs import JobRunner


@pytest.fixture
async def runner() -> AsyncIterator[JobRunner]:
    r = JobRunner(make_registry(), kill_grace=2.0, progress_interval=0.0)
    yield r
    async with asyncio.timeout(TIMEOUT):
        await r.shutdown(grace_seconds=0.5)
