"""Fixtures for the job-execution tests; helpers live in ``jobs_support`` (importable via sys.path)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from jobs_support import TIMEOUT, make_registry

from fsm_worker.jobs import JobRunner


@pytest.fixture
async def runner() -> AsyncIterator[JobRunner]:
    r = JobRunner(make_registry(), kill_grace=2.0, progress_interval=0.0)
    yield r
    async with asyncio.timeout(TIMEOUT):
        await r.shutdown(grace_seconds=0.5)
