"""`fsm-worker` commands as real processes for system tests: start a long-running one, stop it cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping

CLI = [sys.executable, "-m", "fsm_worker.cli"]


async def start(
    *args: str, ready: str, timeout: float, env: Mapping[str, str] | None = None
) -> asyncio.subprocess.Process:
    """Start a long-running CLI command and wait for the line containing `ready` on its stdout (`env`: more
    environment variables for it)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "120", **(env or {})},
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(timeout):
        while ready not in (line := (await proc.stdout.readline()).decode()):
            assert line, f"{args[0]} exited before it was ready"
    return proc


async def stop(proc: asyncio.subprocess.Process, timeout: float) -> int:
    """SIGTERM and wait; SIGKILL (and fail) if it does not exit: a test never leaves processes behind."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(timeout):
            return await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("the process ignored SIGTERM") from None
